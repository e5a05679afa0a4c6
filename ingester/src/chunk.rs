//! A memtable chunk: points of one measure under one layout, held as
//! columns in write order. A sample costs its value (8 bytes for a number)
//! plus its row's series, timestamp and tag-set index, not a `Point` with
//! its own allocation in a tree node.
//!
//! Rows are appended as written, duplicates included: readers keep, per
//! (series, ts), the highest version, then the later write (later chunk,
//! then later row) — the rule the map this replaced applied on insert.

use std::sync::Arc;

use canopy_model::{ColumnLayout, LayoutMapping, Point, SeriesMap, Tags, field_heap_bytes};

use canopy_storage::part::FieldColumn;

/// Points of one measure under one layout, in write order.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) layout: Arc<ColumnLayout>,
    /// The shard every row belongs to (a memtable is one shard's).
    shard: u32,
    series: Vec<u64>,
    ts: Vec<i64>,
    /// Versions; empty while every version was 0 (writes rarely set one).
    versions: Vec<i64>,
    /// Per row, its tag values: an index into `tag_sets`.
    tags: Vec<u32>,
    tag_sets: Vec<Tags>,
    /// The series of each tag set (a set is pushed for one series): a
    /// flush groups rows by series through their sets, without hashing ids.
    set_series: Vec<u64>,
    /// The tag set each series used last in this chunk.
    tag_set_of: SeriesMap<u32>,
    /// `(first row, WAL sequence number)` of each run of rows from one
    /// record (records are appended whole, in sequence order).
    seqs: Vec<(u32, u64)>,
    fields: Vec<FieldColumn>,
}

impl Chunk {
    /// An empty chunk under `layout`.
    pub(crate) fn new(layout: Arc<ColumnLayout>) -> Chunk {
        let fields = (0..layout.fields.len()).map(|i| FieldColumn::for_type(layout.field_type(i))).collect();
        Chunk {
            layout,
            shard: 0,
            series: Vec::new(),
            ts: Vec::new(),
            versions: Vec::new(),
            tags: Vec::new(),
            tag_sets: Vec::new(),
            set_series: Vec::new(),
            tag_set_of: SeriesMap::default(),
            seqs: Vec::new(),
            fields,
        }
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when no row is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Heap bytes of the row columns (capacities: what the allocator holds).
    /// Tag sets and strings are charged as they arrive.
    pub(crate) fn slot_bytes(&self) -> usize {
        (self.series.capacity() + self.ts.capacity() + self.versions.capacity()) * 8
            + self.tags.capacity() * 4
            + self.tag_sets.capacity() * (size_of::<Tags>() + 8)
            + self.seqs.capacity() * 16
            + self.tag_set_of.capacity() * 16
            + self.fields.iter().map(FieldColumn::slot_bytes).sum::<usize>()
    }

    /// Appends `p` (already in this chunk's layout) from WAL record `seq`,
    /// its tags interned for the measure by `intern` — unless they are the
    /// very allocation this chunk holds for the series (what the interner
    /// would hand back): most points skip a second lookup by series.
    /// Returns the heap bytes its values brought beyond the columns' slots
    /// (strings, binaries).
    pub(crate) fn push(&mut self, seq: u64, mut p: Point, intern: impl FnOnce(u64, Tags) -> Tags) -> usize {
        let row = self.ts.len();
        if row == 0 {
            self.shard = p.shard;
        }
        debug_assert_eq!(self.shard, p.shard, "one shard per memtable");
        if self.seqs.last().is_none_or(|&(_, s)| s != seq) {
            debug_assert!(self.seqs.last().is_none_or(|&(_, s)| s < seq), "WAL order");
            self.seqs.push((row as u32, seq));
        }
        self.series.push(p.series);
        self.ts.push(p.ts);
        if p.version != 0 || !self.versions.is_empty() {
            self.versions.resize(row, 0);
            self.versions.push(p.version);
        }
        let held = |c: &Chunk, tags: &Tags| c.tag_set_of.get(&p.series).copied().filter(|&i| Arc::ptr_eq(&c.tag_sets[i as usize], tags));
        let set = match held(self, &p.tags) {
            Some(i) => i,
            None => {
                p.tags = intern(p.series, p.tags);
                if let Some(i) = held(self, &p.tags) {
                    i
                } else {
                    let i = self.tag_sets.len() as u32;
                    self.tag_sets.push(p.tags);
                    self.set_series.push(p.series);
                    self.tag_set_of.insert(p.series, i);
                    i
                }
            }
        };
        self.tags.push(set);
        let mut extra = 0;
        for (col, v) in self.fields.iter_mut().zip(p.fields) {
            extra += field_heap_bytes(&v);
            col.push(v);
        }
        extra
    }

    /// Timestamp of `row`.
    pub(crate) fn ts(&self, row: usize) -> i64 {
        self.ts[row]
    }

    /// Every row's timestamp, in write order.
    pub(crate) fn timestamps(&self) -> &[i64] {
        &self.ts
    }

    /// Version of `row`.
    pub(crate) fn version(&self, row: usize) -> i64 {
        self.versions.get(row).copied().unwrap_or(0)
    }

    /// WAL sequence number of `row`.
    pub(crate) fn seq(&self, row: usize) -> u64 {
        let run = self.seqs.partition_point(|&(first, _)| first as usize <= row);
        self.seqs[run - 1].1
    }

    /// Per row, the index of its tag set (see [`Chunk::set_series`]).
    pub(crate) fn row_sets(&self) -> &[u32] {
        &self.tags
    }

    /// Per tag set, the series whose rows hold it.
    pub(crate) fn set_series(&self) -> &[u64] {
        &self.set_series
    }

    /// The tag values of set `i`.
    pub(crate) fn tag_set(&self, i: u32) -> &Tags {
        &self.tag_sets[i as usize]
    }

    /// True when some row has a version other than 0.
    pub(crate) fn has_versions(&self) -> bool {
        !self.versions.is_empty()
    }

    /// The field columns, in the chunk's layout.
    pub(crate) fn fields(&self) -> &[FieldColumn] {
        &self.fields
    }

    /// The chunk's rows as another layout lays them out (a copy; only after
    /// a schema change).
    pub(crate) fn remapped(&self, to: &Arc<ColumnLayout>) -> Chunk {
        let m = LayoutMapping::new(&self.layout, to);
        let tag_sets = self.tag_sets.iter().map(|t| remap_tags(t, &m)).collect();
        let fields = m
            .fields
            .iter()
            .map(|src| match src {
                Some(i) => self.fields[*i].clone(),
                None => FieldColumn::Null,
            })
            .collect();
        Chunk {
            layout: to.clone(),
            shard: self.shard,
            series: self.series.clone(),
            ts: self.ts.clone(),
            versions: self.versions.clone(),
            tags: self.tags.clone(),
            tag_sets,
            set_series: self.set_series.clone(),
            // Read only: nothing is appended to a remapped copy.
            tag_set_of: SeriesMap::default(),
            seqs: self.seqs.clone(),
            fields,
        }
    }

    /// A reader of this chunk's rows as `mapping` lays them out (`None`: as
    /// stored).
    pub(crate) fn reader(&self, mapping: Option<LayoutMapping>) -> ChunkReader<'_> {
        ChunkReader { chunk: self, tag_sets: vec![None; if mapping.is_some() { self.tag_sets.len() } else { 0 }], mapping }
    }
}

fn remap_tags(t: &Tags, m: &LayoutMapping) -> Tags {
    m.tags.iter().map(|s| s.map(|i| t[i].clone()).unwrap_or_default()).collect()
}

/// Builds [`Point`]s from a chunk's rows, remapping each tag set once.
pub(crate) struct ChunkReader<'a> {
    chunk: &'a Chunk,
    mapping: Option<LayoutMapping>,
    /// Remapped tag sets, built on first use.
    tag_sets: Vec<Option<Tags>>,
}

impl ChunkReader<'_> {
    /// The point of `row`.
    pub(crate) fn point(&mut self, row: usize) -> Point {
        let c = self.chunk;
        let set = c.tags[row] as usize;
        let (tags, fields) = match &self.mapping {
            None => (c.tag_sets[set].clone(), c.fields.iter().map(|f| f.get(row)).collect()),
            Some(m) => {
                let tags = self.tag_sets[set].get_or_insert_with(|| remap_tags(&c.tag_sets[set], m)).clone();
                (tags, m.fields.iter().map(|s| s.map(|i| c.fields[i].get(row)).unwrap_or_default()).collect())
            }
        };
        Point { series: c.series[row], shard: c.shard, ts: c.ts[row], version: c.version(row), tags, fields }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_model::{FieldVal, TagVal};

    fn layout(fields: &[&str]) -> Arc<ColumnLayout> {
        Arc::new(ColumnLayout {
            tags: vec![("d".into(), "host".into(), 1)],
            fields: fields.iter().map(|f| (f.to_string(), canopy_api::v1::FieldType::Int as i32)).collect(),
        })
    }

    fn pt(series: u64, ts: i64, version: i64, host: &Tags, v: i64) -> Point {
        Point { series, shard: 3, ts, version, tags: host.clone(), fields: vec![FieldVal::Int(v)].into() }
    }

    #[test]
    fn rows_read_back_as_written_with_their_sequence_numbers() {
        let (a, b): (Tags, Tags) = (vec![TagVal::Str("a".into())].into(), vec![TagVal::Str("b".into())].into());
        let mut c = Chunk::new(layout(&["v"]));
        let written = [(7, pt(1, 10, 2, &a, 1)), (7, pt(2, 10, 0, &b, 2)), (9, pt(1, 5, 4, &a, 3)), (12, pt(1, 10, 0, &a, 4))];
        let mut interned = 0;
        for (seq, p) in written.clone() {
            c.push(seq, p, |_, tags| {
                interned += 1;
                tags
            });
        }
        assert_eq!(interned, 2, "asked once per series: later points carry the allocation held");
        // Equal tags in another allocation: interned, and the kept one is reused.
        let a2: Tags = (*a).to_vec().into();
        c.push(13, pt(1, 20, 0, &a2, 5), |_, _| a.clone());
        let mut r = c.reader(None);
        let got: Vec<(u64, Point)> = (0..c.len()).map(|i| (c.seq(i), r.point(i))).collect();
        assert_eq!(got[..4], written);
        assert!(Arc::ptr_eq(&got[4].1.tags, &a));
        assert_eq!(c.tag_sets.len(), 2, "one tag set per series");
        assert_eq!(c.set_series(), [1, 2]);
        assert_eq!(c.row_sets(), [0, 1, 0, 0, 0]);
    }

    #[test]
    fn a_remapped_chunk_reads_new_columns_as_null() {
        let host: Tags = vec![TagVal::Str("a".into())].into();
        let mut c = Chunk::new(layout(&["v"]));
        c.push(1, pt(1, 10, 0, &host, 5), |_, t| t);
        let wider = layout(&["w", "v"]);
        let r = c.remapped(&wider);
        assert_eq!(r.reader(None).point(0).fields.to_vec(), vec![FieldVal::Null, FieldVal::Int(5)]);
        let mut via_mapping = c.reader(Some(LayoutMapping::new(&c.layout, &wider)));
        assert_eq!(via_mapping.point(0), r.reader(None).point(0));
    }
}
