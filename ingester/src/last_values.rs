//! The last-value cache of a shard: each series' latest point (highest
//! timestamp, then version, then WAL sequence — the point deduplication
//! would keep there), updated with every acknowledged write and on WAL
//! replay. `LAST` per group over a recent window is answered from it, with
//! no part read, when the cache can prove it saw every point in the window:
//! every point it did not see (in parts when the shard opened) is no later
//! than `unseen_max_ts`, so a window starting after that holds only points
//! it saw. Otherwise the query scans as usual.

use std::collections::HashMap;
use std::sync::Arc;

use canopy_model::{AggFunction, AggState, ColumnLayout, FieldVal, GroupKey, LayoutMapping, PartialResult, Point, QueryPlan, SeriesMap};
use canopy_storage::CatalogState;

/// Series a shard's cache follows before it gives up (answers nothing).
pub(crate) const LAST_VALUES_MAX: usize = 1_000_000;

/// A series' latest point: its WAL sequence, the layout it was written in, the point.
type Latest = (u64, Arc<ColumnLayout>, Point);

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct LastValues {
    /// Per measure: the latest timestamp of any point in parts when the
    /// shard opened (points this cache never saw).
    unseen_max_ts: HashMap<String, i64>,
    /// Per measure, per series: (WAL sequence, layout written in, point).
    latest: HashMap<String, SeriesMap<Latest>>,
    entries: usize,
    overflowed: bool,
}

impl LastValues {
    /// A cache for a shard opened on `catalog`.
    pub(crate) fn new(catalog: &CatalogState) -> LastValues {
        let mut unseen_max_ts: HashMap<String, i64> = HashMap::new();
        for p in &catalog.parts {
            for (m, s) in &p.measures {
                let t = unseen_max_ts.entry(m.clone()).or_insert(i64::MIN);
                *t = (*t).max(s.max_ts);
            }
        }
        LastValues { unseen_max_ts, ..Default::default() }
    }

    /// Accounts for a catalog version replacing `old`: if another WAL's
    /// watermark moved (another ingester flushed this shard — a previous
    /// owner racing a handover), its parts hold points this cache never saw,
    /// so every part's data counts as unseen. Compactions and this shard's
    /// own flushes move no other watermark and change nothing.
    pub(crate) fn adopt(&mut self, old: &CatalogState, new: &CatalogState, wal_id: &str) {
        let foreign = new.watermarks.iter().any(|(w, &mark)| w != wal_id && old.watermarks.get(w).is_none_or(|&o| mark > o));
        if foreign {
            for p in &new.parts {
                for (m, s) in &p.measures {
                    let t = self.unseen_max_ts.entry(m.clone()).or_insert(i64::MIN);
                    *t = (*t).max(s.max_ts);
                }
            }
        }
    }

    /// Offers acknowledged points (in WAL order).
    pub(crate) fn offer(&mut self, measure: &str, layout: &Arc<ColumnLayout>, seq: u64, points: &[Point]) {
        if self.overflowed {
            return;
        }
        if !self.latest.contains_key(measure) {
            self.latest.insert(measure.to_string(), SeriesMap::default());
        }
        let series = self.latest.get_mut(measure).expect("inserted above");
        for p in points {
            match series.get_mut(&p.series) {
                Some(cur) => {
                    // `>=`: of two points with the same timestamp and version
                    // (even in one WAL record), the later write wins.
                    if (p.ts, p.version, seq) >= (cur.2.ts, cur.2.version, cur.0) {
                        // In place: every write of a series lands here, and
                        // its tags, layout and field vector rarely change.
                        cur.0 = seq;
                        if !Arc::ptr_eq(&cur.1, layout) {
                            cur.1 = layout.clone();
                        }
                        // Named field by field, so a field added to
                        // `Point` cannot be left stale here.
                        let Point { series, shard, ts, version, tags, fields } = &mut cur.2;
                        (*series, *shard, *ts, *version) = (p.series, p.shard, p.ts, p.version);
                        if !Arc::ptr_eq(tags, &p.tags) {
                            *tags = p.tags.clone();
                        }
                        fields.clone_from(&p.fields);
                    }
                }
                None => {
                    series.insert(p.series, (seq, layout.clone(), p.clone()));
                    self.entries += 1;
                }
            }
        }
        if self.entries > LAST_VALUES_MAX {
            // Bounded memory: stop following, and stop answering.
            self.overflowed = true;
            self.latest.clear();
        }
    }

    /// The shard's partial result for `plan` from the cache, if the plan is
    /// a `LAST` the cache can answer completely; `None` means scan.
    pub(crate) fn answer(&self, plan: &QueryPlan) -> Option<PartialResult> {
        let agg = plan.aggregation.as_ref()?;
        let schema = &plan.schema;
        // Criteria and groups must read only tags every version shares
        // (the cache holds one version per series), and no field.
        if agg.function != AggFunction::Last || agg.bucket_nanos != 0 || !plan.pushdown_safe() || !plan.shares_tags(&agg.group_tags) {
            return None;
        }
        if self.overflowed || self.unseen_max_ts.get(&schema.name).is_some_and(|&t| t >= plan.begin) {
            return None;
        }
        let mut groups: HashMap<GroupKey, Vec<AggState>> = HashMap::new();
        let Some(series) = self.latest.get(&schema.name) else {
            return Some(PartialResult::Groups(groups));
        };
        // Points share a few layouts (one per schema revision): map each once.
        let mut mappings: Vec<(&Arc<ColumnLayout>, LayoutMapping)> = Vec::new();
        for (_, layout, p) in series.values() {
            if p.ts < plan.begin || !plan.series_allowed(p.series) {
                continue;
            }
            if p.ts >= plan.end {
                // The series' last point in the window is an older one.
                return None;
            }
            let mapping = match mappings.iter().position(|(l, _)| Arc::ptr_eq(l, layout)) {
                Some(i) => &mappings[i].1,
                None => {
                    mappings.push((layout, LayoutMapping::new(layout, &schema.layout)));
                    &mappings[mappings.len() - 1].1
                }
            };
            let p = p.remap(mapping);
            if !plan.predicate.eval(&p.tags, &p.fields) {
                continue;
            }
            // A null field's last value is an older point's: not cached.
            if agg.fields.iter().any(|&f| matches!(p.fields[f], FieldVal::Null)) {
                return None;
            }
            let key: GroupKey = (0, agg.group_tags.iter().map(|&t| p.tags[t].clone()).collect());
            let states = groups.entry(key).or_insert_with(|| vec![AggState::default(); agg.fields.len()]);
            for (s, &f) in states.iter_mut().zip(&agg.fields) {
                s.add(&p.fields[f], p.ts);
            }
        }
        Some(PartialResult::Groups(groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api::v1::query_request::{Aggregation, GroupBy};
    use canopy_api::v1::*;
    use canopy_model::{TagVal, nanos_to_timestamp, testing};
    use canopy_storage::part::PartSummary;
    use canopy_storage::{MeasureStats, PartMeta};

    fn plan(begin: i64, end: i64) -> QueryPlan {
        let schema = Arc::new(testing::compile(
            &testing::group("g", 1, 1, 1),
            &testing::measure("g", "m", &[("s", TagType::Int)], &[("v", FieldType::Int)], &["s"]),
        ));
        let req = QueryRequest {
            groups: vec!["g".into()],
            name: "m".into(),
            time_range: Some(TimeRange { begin: Some(nanos_to_timestamp(begin)), end: Some(nanos_to_timestamp(end)) }),
            group_by: Some(GroupBy { tag_projection: None, field_name: String::new(), bucket_millis: 0 }),
            agg: Some(Aggregation { function: AggregationFunction::Last as i32, field_name: "v".into(), field_names: vec![] }),
            ..Default::default()
        };
        QueryPlan::compile(schema, &req, end).unwrap()
    }

    fn part(max_ts: i64) -> PartMeta {
        let stats = MeasureStats { rows: 1, series: 1, min_ts: max_ts, max_ts, ..Default::default() };
        let summary = PartSummary { rows: 1, min_ts: max_ts, max_ts, measures: [("m".to_string(), stats)].into(), ..Default::default() };
        PartMeta::new(1, "p".into(), 0, i64::MAX, 1, 0, summary)
    }

    #[test]
    fn a_catalog_bringing_another_ingesters_flush_ends_answers_for_windows_it_reaches() {
        let now = canopy_model::now_nanos();
        let p = plan(now - 1_000, now + 1_000);
        let layout = p.schema.layout.clone();
        let point =
            Point { series: 7, shard: 0, ts: now, version: 0, tags: vec![TagVal::Int(1)].into(), fields: vec![FieldVal::Int(5)].into() };
        let empty = CatalogState::empty("g", 0);
        let mut cache = LastValues::new(&empty);
        cache.offer("m", &layout, 1, std::slice::from_ref(&point));
        assert!(cache.answer(&p).is_some(), "the cache saw every point");
        // This shard's own flush (only its watermark moves): still complete.
        let mut own = empty.clone();
        own.watermarks.insert("mine".into(), 1);
        own.parts.push(part(now));
        cache.adopt(&empty, &own, "mine");
        assert!(cache.answer(&p).is_some());
        // A previous owner's flush lands (its watermark moves): its parts may
        // hold points in the window the cache never saw.
        let mut foreign = own.clone();
        foreign.watermarks.insert("theirs".into(), 9);
        foreign.parts.push(part(now + 10));
        cache.adopt(&own, &foreign, "mine");
        assert!(cache.answer(&p).is_none());
        assert!(cache.answer(&plan(now + 11, now + 1_000)).is_some(), "a window after those parts is still answered");
    }
}
