//! The in-memory buffer of a shard: acknowledged points not yet in parts.
//!
//! Each measure's points sit in columnar chunks (`chunk.rs`) of at most
//! [`HEAD_ROWS_MAX`] rows, in write order. Only the newest chunk (the head)
//! takes writes; full chunks are sealed behind an `Arc`, so a query takes
//! them by reference count under the shard lock and reads them after
//! releasing it: what a query copies under the lock is bounded by one head,
//! whatever the memtable's size, and writers' acknowledgements never wait on
//! a scan.
//!
//! The same (series, ts) may be held more than once; readers keep the
//! highest version, then the latest write: the query's merge does, and
//! [`merge_rows`] does for the flush.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use canopy_model::{ColumnLayout, LayoutMapping, Point, TagsInterner};

pub(crate) use crate::chunk::Chunk;

/// Rows a head chunk takes before it is sealed: the most a query copies
/// while holding the shard lock.
pub const HEAD_ROWS_MAX: usize = 2048;

/// What a chunk costs besides its columns: the struct, its `Arc`, its
/// vectors' headers.
const CHUNK_BYTES: usize = 512;

/// What a point costs while queued for the WAL and the memtable, its
/// series' tags aside: the point itself. Writes reserve this much of the
/// memory budget before they are queued; the memtable then charges what its
/// columns grew by.
pub(crate) fn entry_bytes(p: &Point) -> usize {
    p.approx_bytes()
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
            .map(|c| if c.layout == self.head.layout { Cow::Borrowed(c) } else { Cow::Owned(c.remapped(&self.head.layout)) })
            .collect()
    }

    /// One point per (series, ts) in the newest layout, in (series, ts)
    /// order, each with its WAL sequence number.
    #[cfg(test)]
    pub(crate) fn merged(&self) -> Vec<(u64, Point)> {
        let chunks = self.in_newest_layout();
        let mut readers: Vec<_> = chunks.iter().map(|c| c.reader(None)).collect();
        merge_rows(&chunks).map(|(c, row)| (chunks[c].seq(row), readers[c].point(row))).collect()
    }

    fn seal_head(&mut self, next_layout: Arc<ColumnLayout>) {
        if next_layout != self.head.layout {
            self.tags = TagsInterner::default();
        }
        let full = std::mem::replace(&mut self.head, Chunk::new(next_layout));
        if !full.is_empty() {
            self.sealed.push(Arc::new(full));
        }
    }
}

/// The rows of `chunks` (oldest first, one layout) in (series, ts) order,
/// one per (series, ts): the highest version, then the latest write (the
/// later chunk, then the later row). Yields `(chunk index, row)`: a flush
/// reads a frozen memtable that queries still share, by reference.
pub(crate) fn merge_rows<'a>(chunks: &'a [Cow<'a, Chunk>]) -> MergedRows<'a> {
    let orders: Vec<Vec<u32>> = chunks.iter().map(|c| c.sorted_rows()).collect();
    let mut heap = BinaryHeap::with_capacity(chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        if let Some(&row) = orders[i].first() {
            heap.push(Reverse((c.series(row as usize), c.ts(row as usize), i as u32, 0u32)));
        }
    }
    MergedRows { chunks, orders, heap }
}

/// The iterator of [`merge_rows`]: a k-way merge of the chunks, each read in
/// (series, ts) order.
pub(crate) struct MergedRows<'a> {
    chunks: &'a [Cow<'a, Chunk>],
    /// Each chunk's rows in (series, ts) order (write order among equals).
    orders: Vec<Vec<u32>>,
    /// Each chunk's next row: (series, ts, chunk, position in its order).
    heap: BinaryHeap<Reverse<(u64, i64, u32, u32)>>,
}

impl MergedRows<'_> {
    /// Takes the least row off the heap, queueing its chunk's next; returns
    /// its (series, ts) and (chunk, row).
    fn pop(&mut self) -> Option<((u64, i64), (usize, usize))> {
        let Reverse((series, ts, c, pos)) = self.heap.pop()?;
        let order = &self.orders[c as usize];
        if let Some(&next) = order.get(pos as usize + 1) {
            let chunk = &self.chunks[c as usize];
            self.heap.push(Reverse((chunk.series(next as usize), chunk.ts(next as usize), c, pos + 1)));
        }
        Some(((series, ts), (c as usize, order[pos as usize] as usize)))
    }
}

impl Iterator for MergedRows<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let (key, mut best) = self.pop()?;
        // Equal keys come off in write order (chunk, then row): a later one
        // wins unless its version is lower.
        while self.heap.peek().is_some_and(|Reverse((s, t, _, _))| (*s, *t) == key) {
            let (_, (c, row)) = self.pop().expect("peeked");
            if self.chunks[c].version(row) >= self.chunks[best.0].version(best.1) {
                best = (c, row);
            }
        }
        Some(best)
    }
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
        // Charged: each new chunk and tag set, what the head's columns grew
        // by, and strings' own allocations.
        let mut added = 0;
        if !self.measures.contains_key(measure) {
            added += CHUNK_BYTES + measure.len();
            let table = MeasureTable { revision, sealed: Vec::new(), head: Chunk::new(layout.clone()), tags: TagsInterner::default() };
            self.measures.insert(measure.to_string(), table);
        }
        let table = self.measures.get_mut(measure).expect("present or inserted above");
        // A schema change adds columns: later points go to a chunk under
        // the newer layout; sealed chunks keep theirs and are mapped when read.
        if revision > table.revision && *layout != table.head.layout {
            table.seal_head(layout.clone());
            table.revision = revision;
            added += CHUNK_BYTES;
        }
        // A late write validated against an older schema is mapped onto the head's.
        let mapping = (*layout != table.head.layout).then(|| LayoutMapping::new(layout, &table.head.layout));
        let mut slots = table.head.slot_bytes();
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
            added += table.head.push(seq, p);
            if table.head.len() >= HEAD_ROWS_MAX {
                added += table.head.slot_bytes().saturating_sub(slots) + CHUNK_BYTES;
                let layout = table.head.layout.clone();
                table.seal_head(layout);
                slots = table.head.slot_bytes();
            }
        }
        added += table.head.slot_bytes().saturating_sub(slots);
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
        assert!(t.chunks().all(|c| c.len() <= HEAD_ROWS_MAX));
        let rows = t.merged();
        assert_eq!(rows.len(), n as usize);
        for (seq, p) in rows {
            let want = if p.ts % 2 == 0 { (1, p.ts) } else { (2, -p.ts) };
            assert_eq!((seq, p.fields[0].clone()), (want.0, FieldVal::Int(want.1)), "ts {}", p.ts);
        }
    }

    /// The flush's k-way merge agrees with sorting every row.
    fn assert_merges_agree(t: &MeasureTable) {
        let chunks = t.in_newest_layout();
        let mut all: Vec<(u64, Point)> = Vec::new();
        for c in &chunks {
            let mut r = c.reader(None);
            all.extend((0..c.len()).map(|row| (c.seq(row), r.point(row))));
        }
        // The rule as a plain sort: per (series, ts) the highest version,
        // then the latest write (a stable sort keeps write order).
        all.sort_by_key(|(_, p)| (p.series, p.ts, p.version));
        let mut want: Vec<(u64, Point)> = Vec::new();
        for (seq, p) in all {
            match want.last_mut() {
                Some(last) if (last.1.series, last.1.ts) == (p.series, p.ts) => *last = (seq, p),
                _ => want.push((seq, p)),
            }
        }
        assert_eq!(t.merged(), want);
    }

    #[test]
    fn the_flush_merge_keeps_what_a_full_sort_keeps() {
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
    fn one_record_writing_a_point_twice_keeps_the_later_copy_within_and_across_chunks() {
        let l = layout(&["v"]);
        let mut m = Memtable::default();
        // (1, 0) twice in one chunk; (2, 0) on both sides of a seal, all in one record.
        let mut points = vec![pt(1, 0, 3, 10), pt(1, 0, 3, 11)];
        points.extend((1..HEAD_ROWS_MAX as i64 - 3).map(|ts| pt(9, ts, 0, ts)));
        points.push(pt(2, 0, 0, 20));
        points.extend((0..5).map(|ts| pt(8, ts, 0, ts)));
        points.push(pt(2, 0, 0, 21));
        m.insert("cpu", 1, &l, 7, points);
        let t = &m.measures["cpu"];
        assert_eq!(t.sealed().len(), 1, "the record crossed a seal");
        let got = |series| t.merged().into_iter().find(|(_, p)| p.series == series && p.ts == 0).map(|(seq, p)| (seq, p.fields[0].clone()));
        assert_eq!(got(1), Some((7, FieldVal::Int(11))));
        assert_eq!(got(2), Some((7, FieldVal::Int(21))));
        assert_merges_agree(t);
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
