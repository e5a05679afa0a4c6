//! Planning one shard's work over several queriers by time segment. Points
//! with the same (series, timestamp) always share a segment, so each
//! fragment deduplicates on its own and the partial results merge like
//! those of separate shards.

use canopy_model::QueryPlan;
use canopy_storage::{CatalogState, PartMeta};

/// One querier's share of a shard's parts: consecutive time segments.
#[derive(Debug, Clone, PartialEq)]
pub struct PartFragment {
    /// `[begin, end)` of its segments.
    pub window: (i64, i64),
    /// Its parts, in commit order.
    pub part_paths: Vec<String>,
}

/// Up to `ways` fragments of a pinned catalog version's parts in the plan's
/// range, grouped by consecutive segments. Empty when the shard is read
/// whole: fewer than two ways or two segments in range, or segments that
/// overlap (the group's segment interval changed).
pub fn split_by_segment(plan: &QueryPlan, catalog: &CatalogState, ways: usize) -> Vec<PartFragment> {
    let parts: Vec<&PartMeta> = catalog.parts.iter().filter(|p| p.max_ts >= plan.begin && p.min_ts < plan.end).collect();
    let mut windows: Vec<(i64, i64)> = parts.iter().map(|p| (p.segment_start, p.segment_end)).collect();
    windows.sort_unstable();
    windows.dedup();
    if ways < 2 || windows.len() < 2 || windows.windows(2).any(|w| w[0].1 > w[1].0) {
        return Vec::new();
    }
    let per = windows.len().div_ceil(ways);
    windows
        .chunks(per)
        .map(|c| (c[0].0, c[c.len() - 1].1))
        .map(|(b, e)| PartFragment {
            window: (b, e),
            part_paths: parts.iter().filter(|p| p.segment_start >= b && p.segment_end <= e).map(|p| p.path.clone()).collect(),
        })
        .collect()
}

/// The fragment a memtable point at `ts` goes with: the one whose window
/// holds it. A point outside every window collides with no part, so the
/// last fragment takes it.
pub fn fragment_of(fragments: &[PartFragment], ts: i64) -> usize {
    fragments.iter().position(|f| ts >= f.window.0 && ts < f.window.1).unwrap_or(fragments.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use canopy_api::v1::{FieldType, QueryRequest, TagType, TimeRange};
    use canopy_model::{nanos_to_timestamp, testing};
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

    #[test]
    fn parts_split_by_consecutive_segments_and_points_follow_their_segment() {
        let base = 100 * HOUR;
        let mut catalog = CatalogState::empty("g", 0);
        catalog.parts = vec![part(base, HOUR, 1), part(base + HOUR, HOUR, 2), part(base, HOUR, 3), part(base + 2 * HOUR, HOUR, 4)];
        let frags = split_by_segment(&plan(base, base + 10 * HOUR), &catalog, 2);
        assert_eq!(frags.len(), 2);
        assert_eq!(frags[0].part_paths, vec!["p1", "p2", "p3"], "the first two segments, in commit order");
        assert_eq!(frags[1].part_paths, vec!["p4"]);
        assert_eq!(fragment_of(&frags, base + 5), 0);
        assert_eq!(fragment_of(&frags, base + 2 * HOUR + 5), 1);
        assert_eq!(fragment_of(&frags, base + 9 * HOUR), 1, "a point past every part goes to the last");
    }

    #[test]
    fn one_segment_or_overlapping_segments_stay_whole() {
        let base = 100 * HOUR;
        let mut catalog = CatalogState::empty("g", 0);
        catalog.parts = vec![part(base, HOUR, 1), part(base, HOUR, 2)];
        let p = plan(base, base + 10 * HOUR);
        assert!(split_by_segment(&p, &catalog, 4).is_empty(), "one segment");
        catalog.parts = vec![part(base, 2 * HOUR, 1), part(base + HOUR, HOUR, 2)];
        assert!(split_by_segment(&p, &catalog, 4).is_empty(), "overlapping segments");
        catalog.parts = vec![part(base, HOUR, 1), part(base + HOUR, HOUR, 2)];
        assert!(split_by_segment(&p, &catalog, 1).is_empty(), "one querier");
    }
}
