//! Deduplication where versions can collide: the blocks of one series from
//! several sources (parts, the memtable). Blocks whose time ranges do not
//! overlap pass through untouched; overlapping ones are merged by a k-way
//! walk over their sorted timestamps, keeping per timestamp the highest
//! version, and among equal versions the newest source.

use canopy_model::Point;
use canopy_storage::part::DecodedBlock;

/// Rank of memtable rows: newer than every part.
pub(crate) const MEMTABLE_RANK: u64 = u64::MAX;

/// Splits one series' blocks (with their source ranks; later parts rank
/// higher) into blocks that share no timestamp.
pub(crate) fn dedup_series(mut blocks: Vec<(u64, DecodedBlock)>) -> Vec<DecodedBlock> {
    if blocks.len() == 1 {
        return vec![blocks.pop().expect("one").1];
    }
    blocks.sort_by_key(|(rank, b)| (b.ts[0], *rank));
    let mut out = Vec::new();
    let mut cluster: Vec<(u64, DecodedBlock)> = Vec::new();
    let mut cluster_end = i64::MIN;
    for (rank, b) in blocks {
        if !cluster.is_empty() && b.ts[0] > cluster_end {
            out.push(merge(std::mem::take(&mut cluster)));
        }
        cluster_end = if cluster.is_empty() { b.ts[b.len() - 1] } else { cluster_end.max(b.ts[b.len() - 1]) };
        cluster.push((rank, b));
    }
    if !cluster.is_empty() {
        out.push(merge(cluster));
    }
    out
}

/// Merges blocks whose time ranges overlap into one.
fn merge(mut cluster: Vec<(u64, DecodedBlock)>) -> DecodedBlock {
    if cluster.len() == 1 {
        return cluster.pop().expect("one").1;
    }
    let (ranks, blocks): (Vec<u64>, Vec<DecodedBlock>) = cluster.into_iter().unzip();
    let mut pos = vec![0usize; blocks.len()];
    let mut picks = Vec::with_capacity(blocks.iter().map(DecodedBlock::len).max().unwrap_or(0));
    loop {
        let mut ts = i64::MAX;
        let mut any = false;
        for (b, &p) in blocks.iter().zip(&pos) {
            if p < b.len() {
                ts = ts.min(b.ts[p]);
                any = true;
            }
        }
        if !any {
            break;
        }
        let mut best: Option<(i64, u64, usize)> = None;
        for (i, b) in blocks.iter().enumerate() {
            if pos[i] < b.len() && b.ts[pos[i]] == ts {
                let key = (b.versions[pos[i]], ranks[i], i);
                if best.is_none_or(|(v, r, _)| (key.0, key.1) > (v, r)) {
                    best = Some(key);
                }
                pos[i] += 1;
            }
        }
        let (_, _, i) = best.expect("some block is at ts");
        picks.push((i, pos[i] - 1));
    }
    DecodedBlock::gather(&blocks, &picks)
}

/// Turns memtable rows (with WAL sequence numbers, in write order) into one
/// block per series: per (series, ts) the highest version, then the latest
/// write. The sort is stable: two copies from one WAL record (same sequence
/// number) resolve to the later one, as in the memtable and its flush.
pub(crate) fn memtable_blocks(mut rows: Vec<(u64, Point)>) -> Vec<DecodedBlock> {
    rows.sort_by_key(|(seq, p)| (p.series, p.ts, p.version, *seq));
    // Keep the last of each (series, ts): the winner in that order.
    let mut kept: Vec<Point> = Vec::with_capacity(rows.len());
    for (_, p) in rows {
        match kept.last_mut() {
            Some(last) if last.series == p.series && last.ts == p.ts => *last = p,
            _ => kept.push(p),
        }
    }
    kept.chunk_by(|a, b| a.series == b.series).map(DecodedBlock::from_points).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_model::FieldVal;

    fn p(series: u64, ts: i64, version: i64, v: i64) -> Point {
        Point { series, shard: 0, ts, version, tags: vec![].into(), fields: vec![FieldVal::Int(v)].into() }
    }

    fn rows(b: &DecodedBlock) -> Vec<(i64, FieldVal)> {
        (0..b.len()).map(|i| (b.ts[i], b.fields[0].get(i))).collect()
    }

    #[test]
    fn highest_version_then_newest_source_wins() {
        let block = |pts: &[Point]| DecodedBlock::from_points(pts);
        let got = dedup_series(vec![
            (5, block(&[p(1, 10, 0, 1), p(1, 20, 3, 3)])),
            (9, block(&[p(1, 10, 0, 2), p(1, 20, 2, 4), p(1, 30, 0, 6)])),
            (1, block(&[p(1, 100, 0, 7)])),
        ]);
        assert_eq!(got.len(), 2, "the block after a gap passes through");
        assert_eq!(rows(&got[0]), vec![(10, FieldVal::Int(2)), (20, FieldVal::Int(3)), (30, FieldVal::Int(6))]);
        assert_eq!(rows(&got[1]), vec![(100, FieldVal::Int(7))]);
    }

    #[test]
    fn memtable_rows_keep_the_highest_version_then_the_latest_write() {
        let blocks =
            memtable_blocks(vec![(1, p(1, 10, 0, 1)), (2, p(1, 10, 0, 2)), (3, p(1, 5, 4, 3)), (4, p(1, 5, 1, 4)), (1, p(2, 10, 0, 5))]);
        assert_eq!(blocks.len(), 2);
        assert_eq!(rows(&blocks[0]), vec![(5, FieldVal::Int(3)), (10, FieldVal::Int(2))]);
        assert_eq!(rows(&blocks[1]), vec![(10, FieldVal::Int(5))]);
    }
}
