//! Planning one shard's work by time segment, with what each segment is
//! estimated to cost. Points with the same (series, timestamp) always share
//! a segment, so any set of segments deduplicates on its own and the partial
//! results of several sets merge like those of separate shards: segments are
//! the unit the root deals to queriers and to the query function.

use std::sync::Arc;

use canopy_model::QueryPlan;
use canopy_storage::{CatalogState, PartMeta};

use crate::querier::PartQuery;

/// Requests to read one part the catalog says may hold rows: its footer and
/// index, then the needed columns' blocks, coalesced into one range read.
pub const REQUESTS_PER_PART: u64 = 2;

/// One time segment of a pinned catalog version: its parts in the plan's
/// range and what reading them is estimated to cost.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentWork {
    /// `[begin, end)` of the segment.
    pub window: (i64, i64),
    /// Its parts, in commit order.
    pub part_paths: Vec<String>,
    /// Bytes of the plan's measure in the parts its catalog statistics do
    /// not rule out (an upper bound: only the needed columns are read).
    pub bytes: u64,
    /// Object-store requests to read them from a cold cache.
    pub requests: u64,
}

/// The segments of a pinned catalog version's parts in the plan's range, in
/// time order; `None` when segments overlap (the group's segment interval
/// changed), and the shard must be read as one.
pub fn segments_of(plan: &QueryPlan, catalog: &CatalogState) -> Option<Vec<SegmentWork>> {
    let q = PartQuery::new(Arc::new(plan.clone()));
    let mut out: Vec<SegmentWork> = Vec::new();
    let mut parts: Vec<&PartMeta> = catalog.parts.iter().filter(|p| p.max_ts >= plan.begin && p.min_ts < plan.end).collect();
    // Stable: parts of a segment stay in commit order.
    parts.sort_by_key(|p| (p.segment_start, p.segment_end));
    for p in parts {
        let window = (p.segment_start, p.segment_end);
        match out.last_mut() {
            Some(last) if last.window == window => {}
            Some(last) if last.window.1 > window.0 => return None,
            _ => out.push(SegmentWork { window, part_paths: Vec::new(), bytes: 0, requests: 0 }),
        }
        let seg = out.last_mut().expect("pushed");
        seg.part_paths.push(p.path.clone());
        if q.overlaps(p) {
            // The measure's share of the part, by rows.
            let rows = p.measures.get(&plan.schema.name).map_or(0, |m| m.rows);
            seg.bytes += (p.bytes as u128 * rows as u128 / p.rows.max(1) as u128) as u64;
            seg.requests += REQUESTS_PER_PART;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use canopy_api::v1::{FieldType, QueryRequest, TagType, TimeRange};
    use canopy_model::{nanos_to_timestamp, testing};
    use canopy_storage::MeasureStats;
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

    /// A part of `seg..seg+len` holding 100 rows, `of_m` of them of measure `m`.
    fn part(seg: i64, len: i64, id: u64, of_m: u64) -> PartMeta {
        let summary = PartSummary { rows: 100, min_ts: seg, max_ts: seg + len - 1, ..Default::default() };
        let mut p = PartMeta::new(id, format!("p{id}"), seg, seg + len, 0, 0, summary);
        p.bytes = 1000;
        for (name, rows) in [("m", of_m), ("other", 100 - of_m)] {
            if rows > 0 {
                p.measures.insert(name.into(), MeasureStats { rows, min_ts: seg, max_ts: seg + len - 1, ..Default::default() });
            }
        }
        p
    }

    #[test]
    fn parts_group_by_segment_with_the_measures_share_of_their_bytes() {
        let base = 100 * HOUR;
        let mut catalog = CatalogState::empty("g", 0);
        catalog.parts =
            vec![part(base + HOUR, HOUR, 2, 100), part(base, HOUR, 1, 50), part(base, HOUR, 3, 0), part(base + 2 * HOUR, HOUR, 4, 100)];
        let segs = segments_of(&plan(base, base + 10 * HOUR), &catalog).expect("disjoint segments");
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].window, (base, base + HOUR));
        assert_eq!(segs[0].part_paths, vec!["p1", "p3"], "one segment's parts, in commit order");
        // Half of p1 is the measure's; p3 holds none of it and costs nothing.
        assert_eq!((segs[0].bytes, segs[0].requests), (500, REQUESTS_PER_PART));
        assert_eq!(segs[1].part_paths, vec!["p2"]);
        assert_eq!((segs[1].bytes, segs[1].requests), (1000, REQUESTS_PER_PART));
        assert_eq!(segs[2].part_paths, vec!["p4"]);
        // Out of range: the third segment is not read.
        let segs = segments_of(&plan(base, base + 2 * HOUR), &catalog).unwrap();
        assert_eq!(segs.len(), 2);
    }

    #[test]
    fn overlapping_segments_are_read_as_one() {
        let base = 100 * HOUR;
        let mut catalog = CatalogState::empty("g", 0);
        catalog.parts = vec![part(base, 2 * HOUR, 1, 100), part(base + HOUR, HOUR, 2, 100)];
        assert!(segments_of(&plan(base, base + 10 * HOUR), &catalog).is_none());
    }
}
