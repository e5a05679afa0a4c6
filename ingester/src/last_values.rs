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

use canopy_model::{AggFunction, AggState, ColumnLayout, FieldVal, GroupKey, LayoutMapping, PartialResult, Point, QueryPlan};
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
    latest: HashMap<String, HashMap<u64, Latest>>,
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

    /// Offers acknowledged points (in WAL order).
    pub(crate) fn offer(&mut self, measure: &str, layout: &Arc<ColumnLayout>, seq: u64, points: &[Point]) {
        if self.overflowed {
            return;
        }
        let series = self.latest.entry(measure.to_string()).or_default();
        for p in points {
            match series.get_mut(&p.series) {
                Some(cur) => {
                    // `>=`: of two points with the same timestamp and version
                    // (even in one WAL record), the later write wins.
                    if (p.ts, p.version, seq) >= (cur.2.ts, cur.2.version, cur.0) {
                        *cur = (seq, layout.clone(), p.clone());
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
        for (_, layout, p) in series.values() {
            if p.ts < plan.begin || !plan.series_allowed(p.series) {
                continue;
            }
            if p.ts >= plan.end {
                // The series' last point in the window is an older one.
                return None;
            }
            let p = p.remap(&LayoutMapping::new(layout, &schema.layout));
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
