//! Encoding rows into a part, block by block. [`PartWriter`] hands out the
//! finished bytes as it goes, so a compaction output of any size is
//! uploaded in chunks and never sits whole in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use bytes::Bytes;
use canopy_model::codec::put_bytes;
use canopy_model::{ColumnLayout, Point, TagVal};

use super::codec::{encode_packed_ints, encode_packed_timestamps, encode_tag_set_runs, encode_typed_field_column};
use super::footer_blob::FOOTER_BLOB_KEY;
use super::series_rows::{OwnedSeriesRows, SeriesRows};
use super::{BatchInfo, ColumnRange, FIXED_COLUMNS, NEXT_MEASURE, PART_FORMAT, PartFooter, SERIES_INDEX_MAX, SeriesIndex, arrow_schema};
use crate::catalog::MeasureStats;
use crate::{FILTER_SERIES_MAX, KeyFilter, Result, tag_key_hash};

/// Most points in one record batch: the unit a reader fetches and decodes.
const BATCH_POINTS_MAX: usize = 64 * 1024;
/// Most blocks (series) in one record batch.
const BATCH_BLOCKS_MAX: usize = 4096;

/// The rows of one measure for a part, sorted by (series, ts) without
/// duplicate (series, ts) pairs, laid out as `layout`.
#[derive(Debug, Clone)]
pub struct MeasureRows {
    pub name: String,
    pub layout: Arc<ColumnLayout>,
    pub rows: Vec<Point>,
}

/// An encoded part and the statistics for its catalog entry.
#[derive(Debug, Clone)]
pub struct EncodedPart {
    pub bytes: Bytes,
    pub summary: PartSummary,
}

/// Statistics of a finished part, for its catalog entry.
#[derive(Debug, Clone, Default)]
pub struct PartSummary {
    /// Total object size.
    pub bytes: u64,
    /// Bytes at the end of the object a reader fetches to parse the footer:
    /// from format 8 the compressed footer, Arrow's end-of-stream marker,
    /// the Arrow footer and its 10-byte trailer.
    pub footer_bytes: u64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub measures: BTreeMap<String, MeasureStats>,
}

/// Encodes measures (each sorted and deduplicated) into one part in memory.
pub fn encode_part(measures: &[MeasureRows]) -> Result<EncodedPart> {
    let mut w = PartWriter::new(measures.iter().map(|m| m.layout.fields.len()).max().unwrap_or(0))?;
    let mut bytes = Vec::new();
    for m in measures {
        debug_assert!(m.rows.windows(2).all(|w| (w[0].series, w[0].ts) < (w[1].series, w[1].ts)), "rows sorted and unique");
        for block in m.rows.chunk_by(|a, b| a.series == b.series) {
            w.add_block(&m.name, &m.layout, block)?;
            bytes.extend(w.take_bytes());
        }
    }
    let (tail, summary) = w.finish()?;
    bytes.extend(tail);
    Ok(EncodedPart { bytes: Bytes::from(bytes), summary })
}

/// A `Write` the Arrow writer appends to and the part writer drains.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    /// Appends bytes the Arrow writer does not know of (see `footer_blob`).
    fn append(&self, bytes: &[u8]) {
        self.0.lock().expect("sink lock").extend_from_slice(bytes);
    }

    fn drain(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("sink lock"))
    }
}

/// Running statistics of one measure.
#[derive(Debug, Default)]
struct StatsAcc {
    stats: MeasureStats,
    /// Series ids while few enough for a filter; `None` once too many.
    series: Option<Vec<u64>>,
    /// Per stored tag: value → series ids (ascending, as blocks arrive in
    /// series order); `None` once the measure has too many series.
    index: Option<Vec<BTreeMap<TagVal, Vec<u64>>>>,
}

/// Writes a part block by block. Blocks must come grouped by measure, and
/// within a measure in increasing series order.
pub struct PartWriter {
    schema: Arc<arrow_schema::Schema>,
    w: FileWriter<Sink>,
    sink: Sink,
    /// Finished bytes not yet taken.
    ready: Vec<u8>,
    written: u64,
    footer: PartFooter,
    stats: BTreeMap<String, StatsAcc>,
    /// The measures of the batch being built, in order.
    pending_measures: Vec<String>,
    /// The batch being built, if a block was added since the last one.
    pending: Option<BatchBuilder>,
}

impl PartWriter {
    /// Starts a part whose widest measure has `field_columns` fields.
    pub fn new(field_columns: usize) -> Result<PartWriter> {
        let schema = Arc::new(arrow_schema(field_columns));
        // 8-byte alignment (the widest value's): the default 64 pads every
        // buffer of every batch, ~0.5 KB per small measure. Buffers are
        // decompressed into fresh allocations anyway.
        let opts = IpcWriteOptions::try_new(8, false, arrow_ipc::MetadataVersion::V5)?.try_with_compression(Some(CompressionType::ZSTD))?;
        let sink = Sink::default();
        let w = FileWriter::try_new_with_options(sink.clone(), &schema, opts)?;
        let ready = sink.drain();
        Ok(PartWriter {
            schema,
            w,
            sink,
            written: ready.len() as u64,
            ready,
            footer: PartFooter {
                format: PART_FORMAT,
                measures: BTreeMap::new(),
                batches: Vec::new(),
                index: BTreeMap::new(),
                series_index: BTreeMap::new(),
                derived: BTreeMap::new(),
            },
            stats: BTreeMap::new(),
            pending_measures: Vec::new(),
            pending: None,
        })
    }

    /// Adds the points of one series (sorted by ts, no duplicate ts).
    pub fn add_block(&mut self, measure: &str, layout: &Arc<ColumnLayout>, rows: &[Point]) -> Result<()> {
        debug_assert!(rows.windows(2).all(|w| w[0].series == w[1].series), "one series");
        self.add_series(measure, layout, &OwnedSeriesRows::of(rows).rows())
    }

    /// Adds the rows of one series (sorted by ts, no duplicate ts), their
    /// columns as the caller holds them.
    pub fn add_series(&mut self, measure: &str, layout: &Arc<ColumnLayout>, rows: &SeriesRows<'_>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        debug_assert!(rows.ts.windows(2).all(|w| w[0] < w[1]), "sorted");
        debug_assert!(rows.tags.last().is_some_and(|(end, _)| *end as usize == rows.len()), "tag runs cover the rows");
        debug_assert!(rows.versions.is_empty() || rows.versions.len() == rows.len(), "a version per row");
        if layout.fields.len() + FIXED_COLUMNS.len() > self.schema.fields().len() {
            return Err(crate::StorageError::Corrupt {
                path: measure.into(),
                reason: format!("{} fields, but the part was started for fewer", layout.fields.len()),
            });
        }
        if let Some(p) = &self.pending {
            let full = p.points + rows.len() > BATCH_POINTS_MAX || p.series.values_slice().len() >= BATCH_BLOCKS_MAX;
            // Format 6: measures share batches, which are cut only when
            // full. Every batch costs ~1 KB (Arrow's message metadata, a
            // frame per buffer, its footer entry), which a measure of a few
            // series paid alone; a query of a small measure fetches its
            // neighbours' columns too (at most a batch's worth either side).
            if full {
                self.write_pending()?;
            }
        }
        if !self.footer.measures.contains_key(measure) {
            self.footer.measures.insert(measure.to_string(), (**layout).clone());
        }
        debug_assert_eq!(self.footer.measures[measure], **layout, "one layout per measure and part");
        self.account(measure, rows);
        let starts_measure = self.pending_measures.last().is_none_or(|m| m != measure);
        if starts_measure {
            self.pending_measures.push(measure.to_string());
        }
        let field_columns = self.schema.fields().len() - FIXED_COLUMNS.len();
        self.pending.get_or_insert_with(|| BatchBuilder::new(field_columns)).add(starts_measure, rows);
        Ok(())
    }

    fn account(&mut self, measure: &str, rows: &SeriesRows<'_>) {
        if !self.stats.contains_key(measure) {
            let acc = StatsAcc {
                stats: MeasureStats { min_ts: i64::MAX, max_ts: i64::MIN, ..Default::default() },
                series: Some(Vec::new()),
                index: Some(Vec::new()),
            };
            self.stats.insert(measure.to_string(), acc);
        }
        let acc = self.stats.get_mut(measure).expect("inserted above");
        let s = &mut acc.stats;
        s.rows += rows.len() as u64;
        s.series += 1;
        s.min_ts = s.min_ts.min(rows.ts[0]);
        s.max_ts = s.max_ts.max(rows.ts[rows.len() - 1]);
        if let Some(ids) = acc.series.as_mut() {
            ids.push(rows.series);
            if ids.len() > FILTER_SERIES_MAX {
                acc.series = None;
            }
        }
        if s.series as usize > SERIES_INDEX_MAX {
            acc.index = None;
        }
        if let Some(index) = acc.index.as_mut() {
            index.resize_with(rows.tag_count().max(index.len()), BTreeMap::new);
            for (t, values) in index.iter_mut().enumerate() {
                for run in rows.tags.chunk_by(|a, b| Arc::ptr_eq(a.1, b.1) || a.1[t] == b.1[t]) {
                    let v = &run[0].1[t];
                    // Looked up before inserting: most values are there already.
                    let ids = match values.get_mut(v) {
                        Some(ids) => ids,
                        None => values.entry(v.clone()).or_default(),
                    };
                    if ids.last() != Some(&rows.series) {
                        ids.push(rows.series);
                    }
                }
            }
        }
    }

    fn write_pending(&mut self) -> Result<()> {
        let Some(pending) = self.pending.take() else { return Ok(()) };
        // The batch's extent, from the per-block columns before they are finished.
        let series = pending.series.values_slice();
        let first_series = series.iter().copied().min().expect("a block");
        let last_series = series.iter().copied().max().expect("a block");
        let min_ts = pending.min_ts.values_slice().iter().copied().min().expect("a block");
        let max_ts = pending.max_ts.values_slice().iter().copied().max().expect("a block");
        let points = pending.points;
        let batch = pending.finish(&self.schema)?;
        self.w.write(&batch)?;
        let data = self.sink.drain();
        let (meta, columns) = column_ranges(&data, &self.schema)?;
        let mut measures = std::mem::take(&mut self.pending_measures).into_iter();
        self.footer.batches.push(BatchInfo {
            measure: measures.next().expect("a block"),
            shared: measures.collect(),
            min_ts,
            max_ts,
            first_series,
            last_series,
            points: points as u64,
            crc32: crc32fast::hash(&data),
            meta: Some(meta),
            columns,
        });
        self.written += data.len() as u64;
        self.ready.extend_from_slice(&data);
        Ok(())
    }

    /// Takes the bytes finished so far (to upload them).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.ready)
    }

    /// Bytes finished so far, taken or not.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// True if no block was added.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// Writes the footer; returns the remaining bytes and the part's statistics.
    pub fn finish(mut self) -> Result<(Vec<u8>, PartSummary)> {
        self.write_pending()?;
        for (name, acc) in &self.stats {
            let (Some(index), Some(layout)) = (&acc.index, self.footer.measures.get(name)) else { continue };
            let by_tag = layout
                .tags
                .iter()
                .zip(index)
                .map(|((_, tag, _), values)| (tag.clone(), values.iter().map(|(v, ids)| (tag_key(v), ids.clone())).collect()))
                .collect();
            let derived =
                layout.tags.iter().zip(index).filter(|(_, values)| names_its_series(name, values)).map(|((_, t, _), _)| t.clone());
            self.footer.series_index.insert(name.clone(), SeriesIndex::pack(&by_tag, derived.collect()));
        }
        let json = serde_json::to_vec(&self.footer).expect("footer serializes");
        let packed = crate::zstd_json::compress(&json);
        let (blob, value) = super::footer_blob::frame(&packed);
        self.w.write_metadata(FOOTER_BLOB_KEY, value);
        // After the last batch, before the end-of-stream marker `finish` writes.
        self.sink.append(&blob);
        self.w.finish()?;
        let tail = self.sink.drain();
        let trailer: [u8; 10] = tail[tail.len() - 10..].try_into().expect("10 bytes");
        let footer_bytes = arrow_ipc::reader::read_footer_length(trailer)? as u64 + 10 + super::footer_blob::tail_extra(packed.len());
        self.written += tail.len() as u64;
        let mut out = std::mem::take(&mut self.ready);
        out.extend_from_slice(&tail);
        let layouts = &self.footer.measures;
        let measures: BTreeMap<String, MeasureStats> = self
            .stats
            .into_iter()
            .map(|(name, acc)| {
                let mut s = acc.stats;
                let derived = self.footer.series_index.get(&name).map_or(&[][..], |i| &i.derived[..]);
                if let (Some(index), Some(layout)) = (&acc.index, layouts.get(&name)) {
                    let with_series = acc.series.is_some();
                    let mut keys = acc.series.unwrap_or_default();
                    keys.sort_unstable();
                    keys.dedup();
                    for (i, (_, tag, _)) in layout.tags.iter().enumerate() {
                        let named = derived.contains(tag);
                        match index.get(i) {
                            // Found through the series ids.
                            Some(_) if named && with_series => {}
                            Some(values) if values.len() <= FILTER_SERIES_MAX => {
                                keys.extend(values.keys().map(|v| tag_key_hash(tag, v)));
                            }
                            _ => s.keys_unfiltered.push(tag.clone()),
                        }
                    }
                    s.keys = KeyFilter::build(&keys);
                    s.keys_without_series = !with_series;
                }
                (name, s)
            })
            .collect();
        let summary = PartSummary {
            bytes: self.written,
            footer_bytes,
            rows: measures.values().map(|s| s.rows).sum(),
            min_ts: measures.values().map(|s| s.min_ts).min().unwrap_or(0),
            max_ts: measures.values().map(|s| s.max_ts).max().unwrap_or(0),
            measures,
        };
        Ok((out, summary))
    }
}

/// True when every value of a tag is held by exactly one series, the one
/// its hash names (`series_id(measure, [value])`): a lookup can then hash
/// the value instead of reading postings (see `SeriesIndex::derived`).
/// Other tags stop at their first value held by several series.
fn names_its_series(measure: &str, values: &BTreeMap<TagVal, Vec<u64>>) -> bool {
    !values.is_empty() && values.iter().all(|(v, ids)| ids[..] == [canopy_model::series_id(measure, [v])])
}

/// The key of a tag value in the series index: its encoding, in hex.
pub(crate) fn tag_key(v: &TagVal) -> String {
    let mut buf = Vec::new();
    v.encode(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a written batch message keeps its metadata and each column: the
/// message is `0xFFFFFFFF`, the metadata length, the `Message` flatbuffer
/// (padded), then the body; the flatbuffer lists every buffer's range in
/// the body, columns in schema order (validity, [offsets,] values).
fn column_ranges(data: &[u8], schema: &arrow_schema::Schema) -> Result<((u64, u32), Vec<ColumnRange>)> {
    let bad = |reason: String| crate::StorageError::Corrupt { path: "(part being written)".into(), reason };
    let fb_len = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes")) as usize;
    let meta_len = 8 + fb_len;
    let msg = arrow_ipc::root_as_message(&data[8..meta_len]).map_err(|e| bad(format!("batch message: {e}")))?;
    let rb = msg.header_as_record_batch().ok_or_else(|| bad("batch message without a record batch".into()))?;
    let buffers: Vec<(u64, u64)> =
        rb.buffers().map(|b| b.iter().map(|b| (b.offset() as u64, b.length() as u64)).collect()).unwrap_or_default();
    let body = &data[meta_len..];
    let mut columns = Vec::with_capacity(schema.fields().len());
    let mut next = 0;
    for f in schema.fields() {
        let n = if matches!(f.data_type(), arrow_schema::DataType::Utf8 | arrow_schema::DataType::Binary) { 3 } else { 2 };
        let bufs = buffers.get(next..next + n).ok_or_else(|| bad("fewer buffers than columns need".into()))?;
        next += n;
        let start = bufs.iter().map(|b| b.0).min().expect("n > 0");
        let end = bufs.iter().map(|b| b.0 + b.1).max().expect("n > 0");
        let range = body.get(start as usize..end as usize).ok_or_else(|| bad("a buffer past the body".into()))?;
        columns.push(ColumnRange(start, end - start, crc32fast::hash(range)));
    }
    Ok(((meta_len as u64, crc32fast::hash(&data[..meta_len])), columns))
}

/// A record batch being built, one block (series) at a time. Each block's
/// columns are encoded as it arrives: a batch waiting for its last block
/// holds encoded bytes, not points (a flush's points were several times the
/// memtable they came from).
struct BatchBuilder {
    measure: StringBuilder,
    series: UInt64Builder,
    count: UInt32Builder,
    min_ts: Int64Builder,
    max_ts: Int64Builder,
    ts: BinaryBuilder,
    versions: BinaryBuilder,
    tags: BinaryBuilder,
    fields: Vec<BinaryBuilder>,
    /// Points added (the blocks are the `series` values).
    points: usize,
    buf: Vec<u8>,
    col: Vec<u8>,
}

impl BatchBuilder {
    fn new(field_columns: usize) -> BatchBuilder {
        // Small to start (arrow's default reserves 1,024 items a column): a
        // flush keeps one batch open per time segment it writes.
        const BLOCKS: usize = 16;
        let binary = || BinaryBuilder::with_capacity(BLOCKS, 1024);
        BatchBuilder {
            measure: StringBuilder::with_capacity(BLOCKS, 256),
            series: UInt64Builder::with_capacity(BLOCKS),
            count: UInt32Builder::with_capacity(BLOCKS),
            min_ts: Int64Builder::with_capacity(BLOCKS),
            max_ts: Int64Builder::with_capacity(BLOCKS),
            ts: binary(),
            versions: binary(),
            tags: binary(),
            fields: (0..field_columns).map(|_| binary()).collect(),
            points: 0,
            buf: Vec::new(),
            col: Vec::new(),
        }
    }

    /// Encodes one series' rows (sorted by ts) as the batch's next block;
    /// `starts_measure` if it is its measure's first in the batch.
    fn add(&mut self, starts_measure: bool, b: &SeriesRows<'_>) {
        // Format 6: a mark on a measure's first block of the batch (the
        // footer names the batch's measures in order); the blocks after it
        // (empty) belong to the same measure.
        self.measure.append_value(if starts_measure { NEXT_MEASURE } else { "" });
        self.series.append_value(b.series);
        self.count.append_value(b.len() as u32);
        self.min_ts.append_value(b.ts[0]);
        self.max_ts.append_value(b.ts[b.len() - 1]);
        self.points += b.len();

        let buf = &mut self.buf;
        buf.clear();
        encode_packed_timestamps(b.ts, buf);
        self.ts.append_value(&*buf);

        // Format 6: no bytes when every version is 0 (agents never set one).
        buf.clear();
        if b.versions.iter().any(|&v| v != 0) {
            encode_packed_ints(b.versions, buf);
        }
        self.versions.append_value(&*buf);

        buf.clear();
        for t in 0..b.tag_count() {
            self.col.clear();
            encode_tag_set_runs(b.tags, t, &mut self.col);
            put_bytes(buf, &self.col);
        }
        self.tags.append_value(&*buf);

        for (f, out) in self.fields.iter_mut().enumerate() {
            buf.clear();
            if let Some(col) = b.fields.get(f) {
                encode_typed_field_column(col, buf);
            }
            out.append_value(&*buf);
        }
    }

    fn finish(mut self, schema: &Arc<arrow_schema::Schema>) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.measure.finish()),
            Arc::new(self.series.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.min_ts.finish()),
            Arc::new(self.max_ts.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.versions.finish()),
            Arc::new(self.tags.finish()),
        ];
        cols.extend(self.fields.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
}
