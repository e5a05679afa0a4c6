//! Splitting one shard's query work over several queriers by time segment.
//! Points with the same (series, timestamp) always share a segment, so each
//! fragment can deduplicate on its own and the partial results merge like
//! those of separate shards.

use canopy_liaison::{ApiError, Code};
use canopy_model::{Point, QueryPlan};
use canopy_storage::{CatalogState, PartMeta};

/// One querier's share of a shard: parts (empty: every part) and memtable rows.
#[derive(Debug)]
pub(crate) struct Fragment {
    pub(crate) part_paths: Vec<String>,
    pub(crate) rows: Vec<u8>,
}

/// Up to `ways` fragments of a pinned catalog version and its memtable rows
/// (wire-encoded): parts grouped by consecutive segments, each row with the
/// fragment whose segments hold its timestamp. One fragment (every part)
/// when fewer than two segments are in range or segments overlap (the
/// group's segment interval changed).
pub(crate) fn split_by_segment(plan: &QueryPlan, catalog: &CatalogState, rows: Vec<u8>, ways: usize) -> Result<Vec<Fragment>, ApiError> {
    let parts: Vec<&PartMeta> = catalog.parts.iter().filter(|p| p.max_ts >= plan.begin && p.min_ts < plan.end).collect();
    let mut windows: Vec<(i64, i64)> = parts.iter().map(|p| (p.segment_start, p.segment_end)).collect();
    windows.sort_unstable();
    windows.dedup();
    if ways < 2 || windows.len() < 2 || windows.windows(2).any(|w| w[0].1 > w[1].0) {
        return Ok(vec![Fragment { part_paths: Vec::new(), rows }]);
    }
    let per = windows.len().div_ceil(ways);
    let chunks: Vec<(i64, i64)> = windows.chunks(per).map(|c| (c[0].0, c[c.len() - 1].1)).collect();
    let decoded = canopy_model::wire::decode_rows(&rows).ok_or_else(|| ApiError::new(Code::Internal, "undecodable snapshot rows"))?;
    let mut split_rows: Vec<Vec<(u64, Point)>> = vec![Vec::new(); chunks.len()];
    for r in decoded {
        // Rows outside every window collide with no part: any fragment will do.
        let i = chunks.iter().position(|(b, e)| r.1.ts >= *b && r.1.ts < *e).unwrap_or(chunks.len() - 1);
        split_rows[i].push(r);
    }
    Ok(chunks
        .iter()
        .zip(split_rows)
        .map(|((b, e), rows)| Fragment {
            part_paths: parts.iter().filter(|p| p.segment_start >= *b && p.segment_end <= *e).map(|p| p.path.clone()).collect(),
            rows: canopy_model::wire::encode_rows(&rows),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use canopy_api::v1::{FieldType, QueryRequest, TagType, TimeRange};
    use canopy_model::{FieldVal, TagVal, nanos_to_timestamp, testing};
    use canopy_storage::part::PartSummary;

    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn plan(begin: i64, end: i64) -> QueryPlan {
        let schema = testing::compile(
            &testing::group("g", 1, 1, 30),
            &testing::measure("g", "m", &[("s", TagType::String)], &[("v", FieldType::Int)], &["s"]),
        );
        let req = QueryRequest {
            groups: vec!["g".into()],
            name: "m".into(),
            time_range: Some(TimeRange { begin: Some(nanos_to_timestamp(begin)), end: Some(nanos_to_timestamp(end)) }),
            ..Default::default()
        };
        QueryPlan::compile(Arc::new(schema), &req, end).unwrap()
    }

    fn part(seg: i64, len: i64, id: u64) -> PartMeta {
        let summary = PartSummary { rows: 1, min_ts: seg, max_ts: seg + len - 1, ..Default::default() };
        PartMeta::new(id, format!("p{id}"), seg, seg + len, 0, 0, summary)
    }

    fn row(ts: i64) -> (u64, Point) {
        (ts as u64, Point { series: 1, shard: 0, ts, version: 0, tags: vec![TagVal::Str("a".into())], fields: vec![FieldVal::Int(ts)] })
    }

    fn ts_of(f: &Fragment) -> Vec<i64> {
        canopy_model::wire::decode_rows(&f.rows).unwrap().iter().map(|(_, p)| p.ts).collect()
    }

    #[test]
    fn parts_split_by_consecutive_segments_and_rows_follow_their_segment() {
        let base = 100 * HOUR;
        let mut catalog = CatalogState::empty("g", 0);
        catalog.parts = vec![part(base, HOUR, 1), part(base + HOUR, HOUR, 2), part(base, HOUR, 3), part(base + 2 * HOUR, HOUR, 4)];
        let rows = canopy_model::wire::encode_rows(&[row(base + 5), row(base + 2 * HOUR + 5), row(base + 9 * HOUR)]);
        let frags = split_by_segment(&plan(base, base + 10 * HOUR), &catalog, rows, 2).unwrap();
        assert_eq!(frags.len(), 2);
        assert_eq!(frags[0].part_paths, vec!["p1", "p2", "p3"], "the first two segments, in commit order");
        assert_eq!(frags[1].part_paths, vec!["p4"]);
        assert_eq!(ts_of(&frags[0]), vec![base + 5]);
        assert_eq!(ts_of(&frags[1]), vec![base + 2 * HOUR + 5, base + 9 * HOUR], "a row past every part goes to the last");
    }

    #[test]
    fn one_segment_or_overlapping_segments_stay_whole() {
        let base = 100 * HOUR;
        let mut catalog = CatalogState::empty("g", 0);
        catalog.parts = vec![part(base, HOUR, 1), part(base, HOUR, 2)];
        let p = plan(base, base + 10 * HOUR);
        let frags = split_by_segment(&p, &catalog, canopy_model::wire::encode_rows(&[]), 4).unwrap();
        assert_eq!((frags.len(), frags[0].part_paths.len()), (1, 0), "one fragment over every part");
        catalog.parts = vec![part(base, 2 * HOUR, 1), part(base + HOUR, HOUR, 2)];
        assert_eq!(split_by_segment(&p, &catalog, canopy_model::wire::encode_rows(&[]), 4).unwrap().len(), 1);
    }
}
