//! The in-memory buffer of a shard: acknowledged points not yet in parts.
//!
//! Each measure's points sit in chunks of at most [`HEAD_ROWS_MAX`] rows,
//! keyed by (series, ts). Only the newest chunk (the head) takes writes;
//! full chunks are sealed behind an `Arc`, so a query takes them by
//! reference count under the shard lock and reads them after releasing it:
//! what a query copies under the lock is bounded by one head, whatever the
//! memtable's size, and writers' acknowledgements never wait on a scan.
//!
//! Within a chunk a (series, ts) keeps the highest version, then the later
//! write. Across chunks the same (series, ts) may appear more than once;
//! readers apply the same rule (version, then WAL sequence number): the
//! query's merge does, and [`merge_rows`] does for the flush.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use canopy_model::{ColumnLayout, LayoutMapping, Point, TagsInterner};

/// Rows a head chunk takes before it is sealed: the most a query copies
/// while holding the shard lock.
pub const HEAD_ROWS_MAX: usize = 2048;

/// What a point costs in a memtable, its series' tags aside (charged once
/// per series): the point and its map entry. Writes reserve this much of the
/// memory budget before they are queued.
pub(crate) fn entry_bytes(p: &Point) -> usize {
    p.approx_bytes() + 32
}

/// A point's value in a memtable, keyed elsewhere by (series, ts).
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    point: Point,
}

/// Points of one measure under one layout, keyed by (series, ts).
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) layout: Arc<ColumnLayout>,
    rows: BTreeMap<(u64, i64), Entry>,
}

impl Chunk {
    fn new(layout: Arc<ColumnLayout>) -> Chunk {
        Chunk { layout, rows: BTreeMap::new() }
    }

    /// Points with their WAL sequence numbers, in (series, ts) order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Point)> {
        self.rows.values().map(|e| (e.seq, &e.point))
    }

    /// Inserts `p` (already in this chunk's layout); returns the bytes added.
    fn insert(&mut self, seq: u64, p: Point) -> usize {
        let size = entry_bytes(&p);
        match self.rows.get_mut(&(p.series, p.ts)) {
            // Same version: the later write (higher seq) wins.
            Some(e) if e.point.version > p.version => 0,
            Some(e) => {
                *e = Entry { seq, point: p };
                0
            }
            None => {
                self.rows.insert((p.series, p.ts), Entry { seq, point: p });
                size
            }
        }
    }
}

/// The chunks of one measure.
#[derive(Debug, Clone)]
pub(crate) struct MeasureTable {
    /// Schema revision of the head's layout, the newest seen.
    pub(crate) revision: i64,
    /// Full chunks, oldest first. Immutable: shared with queries.
    sealed: Vec<Arc<Chunk>>,
    /// The chunk taking writes, under the newest layout.
    head: Chunk,
    /// One allocation of tag values per series (under the head's layout):
    /// points repeat their series' tags, and memory should grow with series.
    tags: TagsInterner,
}

impl MeasureTable {
    /// The newest layout (every chunk's layout maps onto it).
    pub(crate) fn layout(&self) -> &Arc<ColumnLayout> {
        &self.head.layout
    }

    /// The sealed chunks, shared; cheap to take under the shard lock.
    pub(crate) fn sealed(&self) -> Vec<Arc<Chunk>> {
        self.sealed.clone()
    }

    /// The chunk taking writes.
    pub(crate) fn head(&self) -> &Chunk {
        &self.head
    }

    /// Every chunk, oldest first.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.sealed.iter().map(|c| &**c).chain(std::iter::once(&self.head))
    }

    /// The chunks in the newest layout, oldest first: borrowed, or remapped
    /// copies of the chunks written under an older layout (rare: only after
    /// a schema change). The source of [`merge_rows`].
    pub(crate) fn in_newest_layout(&self) -> Vec<Cow<'_, Chunk>> {
        self.chunks()
            .map(|c| {
                if c.layout == self.head.layout {
                    return Cow::Borrowed(c);
                }
                let m = LayoutMapping::new(&c.layout, &self.head.layout);
                let rows = c.rows.iter().map(|(k, e)| (*k, Entry { seq: e.seq, point: e.point.remap(&m) })).collect();
                Cow::Owned(Chunk { layout: self.head.layout.clone(), rows })
            })
            .collect()
    }

    /// One point per (series, ts) in the newest layout, in (series, ts)
    /// order, each with its WAL sequence number: the highest version, then
    /// the latest write (later chunks hold later writes).
    #[cfg(test)]
    pub(crate) fn merged(&self) -> Vec<(u64, Point)> {
        let mut out: BTreeMap<(u64, i64), (u64, Point)> = BTreeMap::new();
        for chunk in self.chunks() {
            let mapping = (chunk.layout != self.head.layout).then(|| LayoutMapping::new(&chunk.layout, &self.head.layout));
            for (seq, p) in chunk.iter() {
                match out.get(&(p.series, p.ts)) {
                    Some((_, kept)) if kept.version > p.version => {}
                    _ => {
                        let p = mapping.as_ref().map_or_else(|| p.clone(), |m| p.remap(m));
                        out.insert((p.series, p.ts), (seq, p));
                    }
                }
            }
        }
        out.into_values().collect()
    }

    fn seal_head(&mut self, next_layout: Arc<ColumnLayout>) {
        if next_layout != self.head.layout {
            self.tags = TagsInterner::default();
        }
        let full = std::mem::replace(&mut self.head, Chunk::new(next_layout));
        if !full.rows.is_empty() {
            self.sealed.push(Arc::new(full));
        }
    }
}

/// The rows of `chunks` (oldest first, one layout) in (series, ts) order, one
/// per (series, ts) — the highest version, then the newest chunk — by
/// reference: a flush reads a frozen memtable that queries still share, and
/// copying its points doubled its memory.
pub(crate) fn merge_rows<'a>(chunks: &'a [Cow<'a, Chunk>]) -> Vec<(u64, &'a Point)> {
    let mut all: Vec<(u32, u64, &Point)> =
        chunks.iter().enumerate().flat_map(|(i, c)| c.iter().map(move |(seq, p)| (i as u32, seq, p))).collect();
    // Per (series, ts): the highest version first, then the newest chunk.
    all.sort_unstable_by(|a, b| (a.2.series, a.2.ts).cmp(&(b.2.series, b.2.ts)).then(b.2.version.cmp(&a.2.version)).then(b.0.cmp(&a.0)));
    all.dedup_by(|later, first| (later.2.series, later.2.ts) == (first.2.series, first.2.ts));
    all.into_iter().map(|(_, seq, p)| (seq, p)).collect()
}

/// A shard's memtable.
#[derive(Debug)]
pub(crate) struct Memtable {
    pub(crate) measures: HashMap<String, MeasureTable>,
    pub(crate) bytes: usize,
    /// Highest WAL sequence number inserted (0 when empty).
    pub(crate) max_seq: u64,
    /// When the first point was inserted (the flush interval counts from it).
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
        if self.is_empty() {
            self.created = Instant::now();
        }
        self.max_seq = seq;
        let table = self.measures.entry(measure.to_string()).or_insert_with(|| MeasureTable {
            revision,
            sealed: Vec::new(),
            head: Chunk::new(layout.clone()),
            tags: TagsInterner::default(),
        });
        // A schema change adds columns: later points go to a chunk under
        // the newer layout; sealed chunks keep theirs and are mapped when read.
        if revision > table.revision && *layout != table.head.layout {
            table.seal_head(layout.clone());
            table.revision = revision;
        }
        // A late write validated against an older schema is mapped onto the head's.
        let mapping = (*layout != table.head.layout).then(|| LayoutMapping::new(layout, &table.head.layout));
        let mut added = 0;
        for p in points {
            let mut p = match &mapping {
                Some(m) => p.remap(m),
                None => p,
            };
            let (tags, new) = table.tags.intern(p.series, p.tags);
            p.tags = tags;
            if new {
                added += p.tags_bytes() + TagsInterner::ENTRY_BYTES;
            }
            added += table.head.insert(seq, p);
            if table.head.rows.len() >= HEAD_ROWS_MAX {
                let layout = table.head.layout.clone();
                table.seal_head(layout);
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
        Point { series, shard: 0, ts, version, tags: vec![TagVal::Str("h".into())].into(), fields: vec![FieldVal::Int(v)] }
    }

    #[test]
    fn dedups_by_version_then_by_later_write() {
        let l = layout(&["v"]);
        let mut m = Memtable::default();
        m.insert("cpu", 1, &l, 1, vec![pt(1, 10, 5, 100), pt(1, 20, 0, 1)]);
        m.insert("cpu", 1, &l, 2, vec![pt(1, 10, 4, 200), pt(1, 20, 0, 2)]);
        let rows: Vec<_> = m.measures["cpu"].merged().into_iter().map(|(s, p)| (s, p.ts, p.fields[0].clone())).collect();
        assert_eq!(rows, vec![(1, 10, FieldVal::Int(100)), (2, 20, FieldVal::Int(2))]);
        assert_eq!(m.max_seq, 2);
    }

    #[test]
    fn overwrites_across_sealed_chunks_resolve_as_in_one_table() {
        let l = layout(&["v"]);
        let mut m = Memtable::default();
        let n = HEAD_ROWS_MAX as i64 * 2 + 10;
        m.insert("cpu", 1, &l, 1, (0..n).map(|ts| pt(1, ts, 1, ts)).collect());
        // Rewrites of every point: a lower version loses, the same version's later write wins.
        m.insert("cpu", 1, &l, 2, (0..n).map(|ts| pt(1, ts, ts % 2, -ts)).collect());
        let t = &m.measures["cpu"];
        assert!(t.sealed().len() >= 4, "{} sealed chunks", t.sealed().len());
        assert!(t.chunks().all(|c| c.iter().count() <= HEAD_ROWS_MAX));
        let rows = t.merged();
        assert_eq!(rows.len(), n as usize);
        for (seq, p) in rows {
            let want = if p.ts % 2 == 0 { (1, p.ts) } else { (2, -p.ts) };
            assert_eq!((seq, p.fields[0].clone()), (want.0, FieldVal::Int(want.1)), "ts {}", p.ts);
        }
    }

    /// The flush's merge by reference agrees with the owned merge.
    fn assert_merges_agree(t: &MeasureTable) {
        let chunks = t.in_newest_layout();
        let by_ref: Vec<(u64, Point)> = merge_rows(&chunks).into_iter().map(|(s, p)| (s, p.clone())).collect();
        assert_eq!(by_ref, t.merged());
    }

    #[test]
    fn the_flush_merge_by_reference_keeps_what_the_owned_merge_keeps() {
        let l = layout(&["v"]);
        let mut m = Memtable::default();
        let n = HEAD_ROWS_MAX as i64 * 2 + 10;
        m.insert("cpu", 1, &l, 1, (0..n).map(|ts| pt(ts as u64 % 3, ts, 1, ts)).collect());
        m.insert("cpu", 1, &l, 2, (0..n).map(|ts| pt(ts as u64 % 3, ts, ts % 2, -ts)).collect());
        m.insert("cpu", 1, &l, 3, (0..n).step_by(5).map(|ts| pt(ts as u64 % 3, ts, 1, 7)).collect());
        assert_merges_agree(&m.measures["cpu"]);
        // Across a schema change too.
        let mut newer = pt(1, 5, 9, 0);
        newer.fields = vec![FieldVal::Int(1), FieldVal::Int(8)];
        m.insert("cpu", 2, &layout(&["w", "v"]), 4, vec![newer]);
        m.insert("cpu", 1, &l, 5, vec![pt(2, 7, 9, 9)]);
        assert_merges_agree(&m.measures["cpu"]);
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
        let vals: Vec<_> = t.merged().into_iter().map(|(_, p)| p.fields).collect();
        assert_eq!(
            vals,
            vec![vec![FieldVal::Null, FieldVal::Int(7)], vec![FieldVal::Int(1), FieldVal::Int(8)], vec![FieldVal::Null, FieldVal::Int(9)],]
        );
    }
}
