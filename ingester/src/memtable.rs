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
//! [`series_order`] does for the flush.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use canopy_model::{ColumnLayout, IdMap, LayoutMapping, Point, SeriesMap, TagVal, Tags, TagsInterner, tags_bytes};

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
    /// a schema change). The source of [`series_order`].
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
        let order = series_order(&chunks);
        let rows = order.iter().flat_map(|(_, rows)| rows.iter().map(|&(c, r)| (c as usize, r as usize)));
        rows.map(|(c, row)| (chunks[c].seq(row), readers[c].point(row))).collect()
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

/// The rows of `chunks` (oldest first, one layout) grouped by series, in
/// ascending series order, each series' rows in ts order with one row per
/// ts: the highest version, then the latest write (the later chunk, then
/// the later row). Rows are `(chunk index, row)`: a flush reads a frozen
/// memtable that queries still share, by reference.
///
/// Linear in the rows but for series written out of time order: rows are
/// counted per series through their chunk's tag sets (one series each, so
/// a series id is hashed once per set, not per row), then placed in write
/// order, so a series written in time order needs no sort.
pub(crate) fn series_order(chunks: &[Cow<'_, Chunk>]) -> SeriesOrder {
    let mut dense: SeriesMap<u32> = SeriesMap::default();
    let mut ids: Vec<u64> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    // Per chunk, per tag set: the dense index of its series.
    let sets: Vec<Vec<u32>> = chunks
        .iter()
        .map(|c| {
            let of_set: Vec<u32> = c
                .set_series()
                .iter()
                .map(|&s| {
                    *dense.entry(s).or_insert_with(|| {
                        ids.push(s);
                        counts.push(0);
                        (ids.len() - 1) as u32
                    })
                })
                .collect();
            for &set in c.row_sets() {
                counts[of_set[set as usize] as usize] += 1;
            }
            of_set
        })
        .collect();
    let mut by_id: Vec<u32> = (0..ids.len() as u32).collect();
    by_id.sort_unstable_by_key(|&i| ids[i as usize]);
    let mut next = vec![0usize; ids.len()];
    let mut at = 0;
    for &i in &by_id {
        next[i as usize] = at;
        at += counts[i as usize];
    }
    let mut rows = vec![(0u32, 0u32); at];
    for (ci, c) in chunks.iter().enumerate() {
        for (row, &set) in c.row_sets().iter().enumerate() {
            let i = sets[ci][set as usize] as usize;
            rows[next[i]] = (ci as u32, row as u32);
            next[i] += 1;
        }
    }
    // Each series' rows into ts order, one per ts, compacted to the front.
    let ts = |&(c, r): &(u32, u32)| chunks[c as usize].ts(r as usize);
    let version = |&(c, r): &(u32, u32)| chunks[c as usize].version(r as usize);
    let (mut series, mut ends) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
    let (mut read, mut write) = (0, 0);
    // A series written out of time order (concurrent writers) is sorted
    // with its timestamps alongside: (ts, chunk, row) orders rows of one ts
    // in write order, so an unstable sort keeps the rule.
    let mut keyed: Vec<(i64, u32, u32)> = Vec::new();
    for &i in &by_id {
        let n = counts[i as usize];
        let run = &mut rows[read..read + n];
        read += n;
        if !run.windows(2).all(|w| ts(&w[0]) < ts(&w[1])) {
            keyed.clear();
            keyed.extend(run.iter().map(|r| (ts(r), r.0, r.1)));
            keyed.sort_unstable();
            for (to, &(_, c, r)) in run.iter_mut().zip(&keyed) {
                *to = (c, r);
            }
        }
        let mut kept = 0;
        for j in 0..run.len() {
            if kept > 0 && ts(&run[kept - 1]) == ts(&run[j]) {
                // A later write wins unless its version is lower.
                if version(&run[j]) >= version(&run[kept - 1]) {
                    run[kept - 1] = run[j];
                }
            } else {
                run[kept] = run[j];
                kept += 1;
            }
        }
        rows.copy_within(read - n..read - n + kept, write);
        write += kept;
        series.push(ids[i as usize]);
        ends.push(write);
    }
    rows.truncate(write);
    SeriesOrder { series, ends, rows }
}

/// What [`series_order`] returns: per series, its rows.
#[derive(Debug)]
pub(crate) struct SeriesOrder {
    /// Ascending.
    series: Vec<u64>,
    /// Where each series' rows end in `rows`.
    ends: Vec<usize>,
    rows: Vec<(u32, u32)>,
}

impl SeriesOrder {
    /// Each series with its `(chunk, row)`s, in ts order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[(u32, u32)])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.series.iter().zip(starts.zip(&self.ends)).map(|(&s, (lo, &hi))| (s, &self.rows[lo..hi]))
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
        // Each tag allocation of the batch → the interned one, compared by
        // value once: a batch decoded from the WAL wire (cluster mode) has
        // its own allocation per series, and a gateway's may be newer than
        // the kept one — without this, every point of them was compared
        // value by value. The entry holds the batch's allocation, so its
        // address is not reused meanwhile.
        let mut interned: IdMap<usize, (Tags, Tags)> = IdMap::default();
        // Remapped points carry an allocation each: not remembered.
        let remember = mapping.is_none();
        for p in points {
            let p = match &mapping {
                Some(m) => p.remap(m),
                None => p,
            };
            let interner = &mut table.tags;
            let mut new_tags = 0;
            added += table.head.push(seq, p, |series, tags| {
                let key = Arc::as_ptr(&tags) as *const TagVal as usize;
                if let Some((_, kept)) = interned.get(&key) {
                    return kept.clone();
                }
                let (kept, new) = interner.intern(series, tags.clone());
                if new {
                    new_tags = tags_bytes(&kept) + TagsInterner::ENTRY_BYTES;
                }
                if remember {
                    interned.insert(key, (tags, kept.clone()));
                }
                kept
            });
            added += new_tags;
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
    use canopy_model::{FieldVal, TagVal, Tags};

    fn layout(fields: &[&str]) -> Arc<ColumnLayout> {
        Arc::new(ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: fields.iter().map(|f| (f.to_string(), 2)).collect() })
    }

    fn pt(series: u64, ts: i64, version: i64, v: i64) -> Point {
        Point { series, shard: 0, ts, version, tags: vec![TagVal::Str("h".into())].into(), fields: vec![FieldVal::Int(v)].into() }
    }

    #[test]
    fn equal_tags_in_fresh_allocations_share_one_per_series() {
        let l = layout(&["v"]);
        let mut m = Memtable::default();
        // As a batch decoded from the wire carries them: each point its own allocation.
        let batch = |ts: std::ops::Range<i64>| -> Vec<Point> {
            ts.map(|t| Point {
                series: 1 + (t % 2) as u64,
                shard: 0,
                ts: t,
                version: 0,
                tags: vec![TagVal::Str(format!("h{}", t % 2))].into(),
                fields: vec![FieldVal::Int(t)].into(),
            })
            .collect()
        };
        m.insert("cpu", 1, &l, 1, batch(0..10));
        let after_one = m.bytes;
        m.insert("cpu", 1, &l, 2, batch(10..20));
        let t = &m.measures["cpu"];
        assert_eq!(t.head().set_series(), [1, 2], "one tag set per series");
        let rows = t.merged();
        for series in [1, 2] {
            let tags: Vec<&Tags> = rows.iter().filter(|(_, p)| p.series == series).map(|(_, p)| &p.tags).collect();
            assert_eq!(tags.len(), 10);
            assert!(tags.iter().all(|t| Arc::ptr_eq(t, tags[0])), "series {series}: one allocation");
            assert_eq!(tags[0].to_vec(), vec![TagVal::Str(format!("h{}", series - 1))]);
        }
        // The second batch brought rows, not tags.
        assert!(m.bytes - after_one < 10 * 64, "{} bytes for ten rows", m.bytes - after_one);
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

    /// The flush's series order agrees with sorting every row.
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
        newer.fields = vec![FieldVal::Int(1), FieldVal::Int(8)].into();
        m.insert("cpu", 2, &layout(&["w", "v"]), 4, vec![newer]);
        m.insert("cpu", 1, &l, 5, vec![pt(2, 7, 9, 9)]);
        assert_merges_agree(&m.measures["cpu"]);
    }

    #[test]
    fn the_flush_order_keeps_what_a_full_sort_keeps_for_random_writes() {
        use rand::{Rng, SeedableRng};
        let l = layout(&["v"]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let hosts: Vec<Tags> = (0..3).map(|h| vec![TagVal::Str(format!("h{h}"))].into()).collect();
        let mut m = Memtable::default();
        for seq in 1..=6 {
            let points = (0..rng.random_range(1..HEAD_ROWS_MAX + 500))
                .map(|_| {
                    let mut p = pt(rng.random_range(0..6), rng.random_range(0..300), rng.random_range(0..3), rng.random());
                    // A series whose tags change between writes gets another tag set.
                    p.tags = hosts[rng.random_range(0..hosts.len())].clone();
                    p
                })
                .collect();
            m.insert("cpu", 1, &l, seq, points);
        }
        assert!(m.measures["cpu"].sealed().len() >= 2);
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
        newer.fields = vec![FieldVal::Int(1), FieldVal::Int(8)].into();
        m.insert("cpu", 2, &layout(&["w", "v"]), 2, vec![newer]);
        // A late write validated against the old schema still lands right.
        m.insert("cpu", 1, &layout(&["v"]), 3, vec![pt(1, 30, 0, 9)]);
        let t = &m.measures["cpu"];
        let vals: Vec<_> = t.merged().into_iter().map(|(_, p)| p.fields.to_vec()).collect();
        assert_eq!(
            vals,
            vec![vec![FieldVal::Null, FieldVal::Int(7)], vec![FieldVal::Int(1), FieldVal::Int(8)], vec![FieldVal::Null, FieldVal::Int(9)],]
        );
    }
}
