//! The in-memory buffer of a shard: acknowledged points not yet in parts,
//! deduplicated by (series, timestamp) as they arrive (highest version wins,
//! then the later write), sorted for flushing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use canopy_model::{ColumnLayout, LayoutMapping, Point};

/// A point's value in a memtable, keyed elsewhere by (series, ts).
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    point: Point,
}

/// Rows of one measure, under the newest layout seen.
#[derive(Debug, Clone)]
pub(crate) struct MeasureTable {
    pub(crate) revision: i64,
    pub(crate) layout: Arc<ColumnLayout>,
    rows: BTreeMap<(u64, i64), Entry>,
}

impl MeasureTable {
    /// Points with their WAL sequence numbers, in (series, ts) order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Point)> {
        self.rows.values().map(|e| (e.seq, &e.point))
    }
}

/// A shard's memtable.
#[derive(Debug)]
pub(crate) struct Memtable {
    pub(crate) measures: HashMap<String, MeasureTable>,
    pub(crate) bytes: usize,
    /// Highest WAL sequence number inserted (0 when empty).
    pub(crate) max_seq: u64,
    pub(crate) created: Instant,
}

impl Default for Memtable {
    fn default() -> Self {
        Memtable { measures: HashMap::new(), bytes: 0, max_seq: 0, created: Instant::now() }
    }
}

impl Memtable {
    /// True if nothing was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.max_seq == 0
    }

    /// Inserts the points of one WAL record. Returns the bytes added.
    /// Sequence numbers must increase across calls.
    pub(crate) fn insert(&mut self, measure: &str, revision: i64, layout: &Arc<ColumnLayout>, seq: u64, points: Vec<Point>) -> usize {
        debug_assert!(seq > self.max_seq, "WAL order");
        self.max_seq = seq;
        let table = self.measures.entry(measure.to_string()).or_insert_with(|| MeasureTable {
            revision,
            layout: layout.clone(),
            rows: BTreeMap::new(),
        });
        // A schema change adds columns: move the table to the newer layout
        // once, and map points written under an older one onto it.
        if revision > table.revision && *layout != table.layout {
            let m = LayoutMapping::new(&table.layout, layout);
            for e in table.rows.values_mut() {
                e.point = e.point.remap(&m);
            }
            table.layout = layout.clone();
            table.revision = revision;
        }
        let mapping = (*layout != table.layout).then(|| LayoutMapping::new(layout, &table.layout));
        let mut added = 0;
        for p in points {
            let p = match &mapping {
                Some(m) => p.remap(m),
                None => p,
            };
            let size = p.approx_bytes();
            let key = (p.series, p.ts);
            match table.rows.get_mut(&key) {
                // Same version: the later write (higher seq) wins.
                Some(e) if e.point.version > p.version => {}
                Some(e) => *e = Entry { seq, point: p },
                None => {
                    table.rows.insert(key, Entry { seq, point: p });
                    added += size + 32;
                }
            }
        }
        self.bytes += added;
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_model::{FieldVal, TagVal};

    fn layout(fields: &[&str]) -> Arc<ColumnLayout> {
        Arc::new(ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: fields.iter().map(|f| (f.to_string(), 2)).collect() })
    }

    fn pt(series: u64, ts: i64, version: i64, v: i64) -> Point {
        Point { series, shard: 0, ts, version, tags: vec![TagVal::Str("h".into())], fields: vec![FieldVal::Int(v)] }
    }

    #[test]
    fn dedups_by_version_then_by_later_write() {
        let l = layout(&["v"]);
        let mut m = Memtable::default();
        m.insert("cpu", 1, &l, 1, vec![pt(1, 10, 5, 100), pt(1, 20, 0, 1)]);
        m.insert("cpu", 1, &l, 2, vec![pt(1, 10, 4, 200), pt(1, 20, 0, 2)]);
        let rows: Vec<_> = m.measures["cpu"].iter().map(|(s, p)| (s, p.ts, p.fields[0].clone())).collect();
        assert_eq!(rows, vec![(1, 10, FieldVal::Int(100)), (2, 20, FieldVal::Int(2))]);
        assert_eq!(m.max_seq, 2);
    }

    #[test]
    fn a_schema_change_remaps_rows_by_name() {
        let mut m = Memtable::default();
        m.insert("cpu", 1, &layout(&["v"]), 1, vec![pt(1, 10, 0, 7)]);
        let mut newer = pt(1, 20, 0, 0);
        newer.fields = vec![FieldVal::Int(1), FieldVal::Int(8)];
        m.insert("cpu", 2, &layout(&["w", "v"]), 2, vec![newer]);
        // A late write validated against the old schema still lands right.
        m.insert("cpu", 1, &layout(&["v"]), 3, vec![pt(1, 30, 0, 9)]);
        let t = &m.measures["cpu"];
        let vals: Vec<_> = t.iter().map(|(_, p)| p.fields.clone()).collect();
        assert_eq!(
            vals,
            vec![vec![FieldVal::Null, FieldVal::Int(7)], vec![FieldVal::Int(1), FieldVal::Int(8)], vec![FieldVal::Null, FieldVal::Int(9)],]
        );
    }
}
