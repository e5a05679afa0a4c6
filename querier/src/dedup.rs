//! Deduplication of one shard's rows gathered from several sources.

use canopy_model::Point;

/// Keeps one row per (series, timestamp): the highest version, and among
/// equal versions the newest source (`rank`: later parts and memtable
/// points rank higher). Returns rows sorted by (series, timestamp).
pub fn dedup_rows(mut rows: Vec<(u64, Point)>) -> Vec<Point> {
    rows.sort_unstable_by(|(ra, a), (rb, b)| (a.series, a.ts).cmp(&(b.series, b.ts)).then_with(|| (b.version, *rb).cmp(&(a.version, *ra))));
    rows.dedup_by(|(_, later), (_, first)| later.series == first.series && later.ts == first.ts);
    rows.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_model::FieldVal;

    fn p(series: u64, ts: i64, version: i64, v: i64) -> Point {
        Point { series, shard: 0, ts, version, tags: vec![], fields: vec![FieldVal::Int(v)] }
    }

    #[test]
    fn highest_version_then_newest_source_wins() {
        let rows = vec![
            (5, p(1, 10, 0, 1)),
            (9, p(1, 10, 0, 2)), // newer source, same version
            (1, p(1, 20, 3, 3)), // higher version from an older source
            (9, p(1, 20, 2, 4)),
            (1, p(2, 10, 0, 5)),
        ];
        let got: Vec<_> = dedup_rows(rows).into_iter().map(|p| (p.series, p.ts, p.fields[0].clone())).collect();
        assert_eq!(got, vec![(1, 10, FieldVal::Int(2)), (1, 20, FieldVal::Int(3)), (2, 10, FieldVal::Int(5))]);
    }
}
