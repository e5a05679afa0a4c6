//! Reading parts with range requests: one read for the footer, then only
//! the record batches whose measure and time range a query needs.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type, UInt64Type};
use arrow_buffer::Buffer;
use arrow_ipc::reader::FileDecoder;
use arrow_ipc::{Block, MetadataVersion};
use arrow_schema::SchemaRef;
use canopy_model::codec::take_bytes;
use canopy_model::{ColumnLayout, LayoutMapping, Point, TagVal};
use object_store::{ObjectStore, ObjectStoreExt};

use super::block::{DecodedBlock, FieldColumn, TagColumn};
use super::codec::{decode_field_typed, decode_ints_range, decode_packed_timestamps, decode_tag_column, decode_timestamps};
use super::footer_blob::FOOTER_BLOB_KEY;
use super::writer::tag_key;
use super::{
    BATCH_MEASURES_KEY, BatchInfo, ColumnRange, Derived, FIXED_COLUMNS, FOOTER_KEY, FOOTER_ZSTD_KEY, FOOTER_ZSTD7_KEY, NEXT_MEASURE,
    PART_FORMATS_READ, PartFooter, field_column,
};
use crate::catalog::PartMeta;
use crate::{Result, StorageError};

/// A part's footer, parsed: enough to plan and decode batch reads.
#[derive(Debug, Clone)]
pub struct PartIndex {
    schema: SchemaRef,
    version: MetadataVersion,
    blocks: Vec<Block>,
    footer: PartFooter,
}

impl PartIndex {
    /// Bytes this index holds in memory, roughly; for cache budgets.
    pub fn approx_bytes(&self) -> usize {
        let batches: usize =
            self.footer.batches.iter().map(|b| 96 + b.columns.len() * 24 + b.shared.iter().map(|m| m.len() + 24).sum::<usize>()).sum();
        // The series index dominates for parts with many series: every
        // posting list and key, plus map overhead.
        let index: usize = self
            .footer
            .index
            .values()
            .flat_map(|tags| tags.iter())
            .map(|(tag, values)| tag.len() + 48 + values.iter().map(|(k, ids)| k.len() + ids.len() * 8 + 64).sum::<usize>())
            .sum();
        let derived: usize =
            self.footer.derived.values().map(|d| d.ids.len() * 8 + d.tags.iter().map(|t| t.len() + 24).sum::<usize>()).sum();
        512 + self.blocks.len() * 24 + batches + self.footer.measures.len() * 256 + index + derived
    }

    /// The measures in the part with the layouts they were written with.
    pub fn measures(&self) -> impl Iterator<Item = (&String, &ColumnLayout)> {
        self.footer.measures.iter()
    }

    /// The part's format version.
    pub fn format(&self) -> u32 {
        self.footer.format
    }

    /// The series of `measure` that hold, for every `(tag, values)` given,
    /// one of the values — sorted — from the part's series index. `None`
    /// when the part has no index for the measure (format 1, too many
    /// series): then any series may match.
    pub fn series_matching(&self, measure: &str, conditions: &[(&str, &[TagVal])]) -> Option<Vec<u64>> {
        let index = self.footer.index.get(measure)?;
        let derived = self.footer.derived.get(measure);
        let mut out: Option<Vec<u64>> = None;
        for (tag, values) in conditions {
            let mut ids: Vec<u64> = match derived.filter(|d| d.tags.iter().any(|t| t == tag)) {
                // Each value names its series; a hash of a value the part
                // lacks names none of its series.
                Some(d) => {
                    values.iter().map(|v| canopy_model::series_id(measure, [v])).filter(|id| d.ids.binary_search(id).is_ok()).collect()
                }
                None => {
                    // A tag the part never stored reads as null everywhere.
                    let postings = index.get(*tag);
                    if postings.is_none() && values.contains(&TagVal::Null) {
                        continue;
                    }
                    values.iter().flat_map(|v| postings.and_then(|p| p.get(&tag_key(v))).into_iter().flatten().copied()).collect()
                }
            };
            ids.sort_unstable();
            ids.dedup();
            out = Some(match out {
                None => ids,
                Some(cur) => cur.into_iter().filter(|id| ids.binary_search(id).is_ok()).collect(),
            });
        }
        out
    }

    /// Where the part's record batches keep their bytes: per Arrow column
    /// its bytes summed over the batches, then `(batch metadata)` (each
    /// batch's message header). Empty for format 1, which kept no ranges.
    pub fn bytes_by_column(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self.schema.fields().iter().map(|f| (f.name().clone(), 0)).collect();
        let mut meta = 0;
        for b in &self.footer.batches {
            for (o, c) in out.iter_mut().zip(&b.columns) {
                o.1 += c.1;
            }
            meta += b.meta.map_or(0, |m| m.0);
        }
        if self.footer.batches.iter().all(|b| b.meta.is_none()) {
            return Vec::new();
        }
        out.push(("(batch metadata)".into(), meta));
        out
    }

    /// The measures record batch `batch` holds, in order.
    pub fn batch_measures(&self, batch: usize) -> Vec<&str> {
        let info = &self.footer.batches[batch];
        std::iter::once(info.measure.as_str()).chain(info.shared.iter().map(String::as_str)).collect()
    }

    /// How many record batches the part holds.
    pub fn batch_count(&self) -> usize {
        self.blocks.len()
    }

    /// The record batches holding `measure`, in series order (format 6: a
    /// batch may hold other measures too).
    pub fn batches_of(&self, measure: &str) -> Vec<usize> {
        (0..self.footer.batches.len()).filter(|&i| self.footer.batches[i].holds(measure)).collect()
    }

    /// Parses a footer from the tail of a part (at least the footer and trailer).
    pub fn parse(path: &str, tail: &[u8]) -> Result<PartIndex> {
        let corrupt = |reason: String| StorageError::Corrupt { path: path.into(), reason };
        if tail.len() < 10 {
            return Err(corrupt("shorter than an Arrow trailer".into()));
        }
        let trailer: [u8; 10] = tail[tail.len() - 10..].try_into().expect("10 bytes");
        let len = arrow_ipc::reader::read_footer_length(trailer)?;
        if len + 10 > tail.len() {
            return Err(corrupt(format!("footer of {len} bytes exceeds the {} bytes read", tail.len())));
        }
        let fb = arrow_ipc::root_as_footer(&tail[tail.len() - 10 - len..tail.len() - 10]).map_err(|e| corrupt(format!("footer: {e}")))?;
        let schema = fb.schema().ok_or_else(|| corrupt("footer without schema".into()))?;
        let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(schema)?);
        let blocks: Vec<Block> = fb.recordBatches().map(|b| b.iter().copied().collect()).unwrap_or_default();
        let meta = |key: &str| fb.custom_metadata().and_then(|kvs| kvs.iter().find(|kv| kv.key() == Some(key)).and_then(|kv| kv.value()));
        let mut footer: PartFooter = match (meta(FOOTER_BLOB_KEY), meta(FOOTER_ZSTD7_KEY), meta(FOOTER_ZSTD_KEY), meta(FOOTER_KEY)) {
            (Some(value), ..) => {
                let zst = super::footer_blob::find(tail, tail.len() - 10 - len, value).map_err(corrupt)?;
                let json = crate::zstd_json::decompress(zst).map_err(|e| corrupt(format!("{FOOTER_BLOB_KEY}: {e}")))?;
                serde_json::from_slice(&json).map_err(|e| corrupt(format!("{FOOTER_BLOB_KEY}: {e}")))?
            }
            (None, Some(packed), _, _) => {
                let zst =
                    super::seven_bit::decode(packed).ok_or_else(|| corrupt(format!("{FOOTER_ZSTD7_KEY}: a character past U+007F")))?;
                let json = crate::zstd_json::decompress(&zst).map_err(|e| corrupt(format!("{FOOTER_ZSTD7_KEY}: {e}")))?;
                serde_json::from_slice(&json).map_err(|e| corrupt(format!("{FOOTER_ZSTD7_KEY}: {e}")))?
            }
            (None, None, Some(packed), _) => {
                let json = unpack_footer(packed).map_err(|e| corrupt(format!("{FOOTER_ZSTD_KEY}: {e}")))?;
                serde_json::from_slice(&json).map_err(|e| corrupt(format!("{FOOTER_ZSTD_KEY}: {e}")))?
            }
            (None, None, None, Some(json)) => serde_json::from_str(json).map_err(|e| corrupt(format!("{FOOTER_KEY}: {e}")))?,
            (None, None, None, None) => {
                return Err(corrupt(format!("footer without {FOOTER_BLOB_KEY}, {FOOTER_ZSTD7_KEY}, {FOOTER_ZSTD_KEY} or {FOOTER_KEY}")));
            }
        };
        if !PART_FORMATS_READ.contains(&footer.format) {
            return Err(corrupt(format!("unsupported part format {}", footer.format)));
        }
        for (measure, packed) in std::mem::take(&mut footer.series_index) {
            let index = packed.unpack().ok_or_else(|| corrupt(format!("series index of {measure}: a position past its ids")))?;
            if !packed.derived.is_empty() {
                footer.derived.insert(measure.clone(), Derived { tags: packed.derived, ids: packed.ids });
            }
            footer.index.insert(measure, index);
        }
        if footer.batches.len() != blocks.len() {
            return Err(corrupt(format!("{} batch stats for {} batches", footer.batches.len(), blocks.len())));
        }
        if footer.format >= 2 && footer.batches.iter().any(|b| b.meta.is_none() || b.columns.len() != schema.fields().len()) {
            return Err(corrupt("a batch without its column ranges".into()));
        }
        Ok(PartIndex { schema, version: fb.version(), blocks, footer })
    }
}

/// The JSON of a format-4 footer: base64, then zstd (bounded).
fn unpack_footer(packed: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    let zst = base64::engine::general_purpose::STANDARD_NO_PAD.decode(packed).map_err(|e| e.to_string())?;
    crate::zstd_json::decompress(&zst)
}

/// Reads and parses a part's footer with one range request.
pub async fn read_index(store: &dyn ObjectStore, meta: &PartMeta) -> Result<PartIndex> {
    let want = meta.footer_bytes.min(meta.bytes);
    let tail = store.get_range(&meta.path.as_str().into(), meta.bytes - want..meta.bytes).await?;
    PartIndex::parse(&meta.path, &tail)
}

/// What to read from a part.
pub struct Scan<'a> {
    pub measure: &'a str,
    /// Layout to return points in (columns the part lacks read as null).
    pub target: &'a ColumnLayout,
    /// Inclusive start and exclusive end of the time range.
    pub begin: i64,
    pub end: i64,
    /// Sorted series ids to restrict to, if the query pins them.
    pub series: Option<&'a [u64]>,
    /// Row filter applied after decoding.
    pub keep: &'a (dyn Fn(&Point) -> bool + Sync),
    /// Target columns to decode; `None` decodes all. Others read as null.
    pub needed: Option<(&'a [bool], &'a [bool])>,
    /// A predicate on a row's tags (target layout) and the tags it reads:
    /// a block whose read tags are constant is checked once and skipped
    /// whole when it fails, before its timestamps and fields are decoded.
    pub block_filter: Option<BlockFilter<'a>>,
    /// Decode versions; without them blocks carry none (a query that
    /// neither merges overlapping sources nor returns raw points skips them).
    pub versions: bool,
}

/// The tags a block filter reads (target layout) and the filter itself.
pub type BlockFilter<'a> = (&'a [usize], &'a (dyn Fn(&[TagVal]) -> bool + Sync));

/// A [`Scan::keep`] that keeps every point.
fn keep_all(_: &Point) -> bool {
    true
}

impl<'a> Scan<'a> {
    /// Every point of `measure`, every column, in the `target` layout.
    pub fn everything(measure: &'a str, target: &'a ColumnLayout) -> Scan<'a> {
        Scan {
            measure,
            target,
            begin: i64::MIN,
            end: i64::MAX,
            series: None,
            keep: &keep_all,
            needed: None,
            block_filter: None,
            versions: true,
        }
    }

    fn series_in(&self, first: u64, last: u64) -> bool {
        self.series.is_none_or(|s| {
            let i = s.partition_point(|&id| id < first);
            i < s.len() && s[i] <= last
        })
    }
}

/// The record batches of a part that may hold points a [`Scan`] wants
/// (measure, time range and series range per the footer), in file order.
pub fn select_batches(index: &PartIndex, scan: &Scan<'_>) -> Vec<usize> {
    (0..index.blocks.len())
        .filter(|&i| {
            let b: &BatchInfo = &index.footer.batches[i];
            b.holds(scan.measure) && b.max_ts >= scan.begin && b.min_ts < scan.end && scan.series_in(b.first_series, b.last_series)
        })
        .collect()
}

/// How a part's stored columns of the scanned measure map onto the scan's
/// target layout (restricted to the needed columns); `None` if the part
/// does not hold the measure.
pub fn scan_mapping(index: &PartIndex, scan: &Scan<'_>) -> Option<LayoutMapping> {
    let stored = index.footer.measures.get(scan.measure)?;
    let mut mapping = LayoutMapping::new(stored, scan.target);
    if let Some((tags, fields)) = scan.needed {
        mapping.restrict(tags, fields);
    }
    Some(mapping)
}

/// Reads the points a [`Scan`] asks for.
pub async fn scan_part(store: &dyn ObjectStore, meta: &PartMeta, index: &PartIndex, scan: &Scan<'_>) -> Result<Vec<Point>> {
    let Some(mapping) = scan_mapping(index, scan) else {
        return Ok(Vec::new());
    };
    let wanted = select_batches(index, scan);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for batch in fetch_batches(store, meta, index, &wanted, Some(&mapping.source_fields())).await? {
        decode_blocks(&meta.path, index.format(), &batch, &mapping, scan, &mut |b| {
            out.extend((0..b.len()).map(|i| b.point(i)).filter(|p| (scan.keep)(p)));
        })?;
    }
    Ok(out)
}

/// Fetches record batches by index and verifies their checksums. With
/// `fields` (stored field indices) and a format-2 part, only each batch's
/// metadata, its fixed columns and those fields' columns are fetched and
/// decoded; the rest of the batch is never downloaded. Nearby ranges are
/// coalesced, each remaining range is one request.
pub async fn fetch_batches(
    store: &dyn ObjectStore,
    meta: &PartMeta,
    index: &PartIndex,
    which: &[usize],
    fields: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let corrupt = |reason: String| StorageError::Corrupt { path: meta.path.clone(), reason };
    // Per batch: the Arrow columns to decode (None: all) and the byte ranges to fetch.
    let columns: Option<Vec<usize>> = match fields {
        Some(f) if index.footer.format >= 2 => Some((0..FIXED_COLUMNS.len()).chain(f.iter().map(|&i| FIXED_COLUMNS.len() + i)).collect()),
        _ => None,
    };
    let wanted = ranges_to_fetch(index, which, columns.as_deref()).map_err(corrupt)?;
    let fetched = fetch_coalesced(store, &meta.path, &wanted).await?;
    let mut decoder = FileDecoder::new(index.schema.clone(), index.version);
    if let Some(cols) = &columns {
        let present: Vec<usize> = cols.iter().copied().filter(|&c| c < index.schema.fields().len()).collect();
        decoder = decoder.with_projection(present);
    }
    let mut out = Vec::with_capacity(which.len());
    for &i in which {
        let b = &index.blocks[i];
        let info = &index.footer.batches[i];
        let start = b.offset() as u64;
        let total = b.metaDataLength() as u64 + b.bodyLength() as u64;
        let data = match (&columns, info.meta) {
            (Some(cols), Some((meta_len, meta_crc))) => {
                // The message up to the last column read, with only the
                // fetched ranges filled in (the gaps zeroed): the decoder
                // skips the other columns without reading them.
                let head = fetched.slice(start..start + meta_len);
                if crc32fast::hash(&head) != meta_crc {
                    return Err(corrupt(format!("batch {i} metadata checksum mismatch")));
                }
                let mut order: Vec<usize> = cols.clone();
                order.sort_by_key(|&c| info.columns[c].0);
                let used = order.last().map_or(0, |&c| info.columns[c].0 + info.columns[c].1);
                let mut msg = Vec::with_capacity((meta_len + used).min(total) as usize);
                msg.extend_from_slice(&head);
                for c in order {
                    let ColumnRange(off, len, crc) = info.columns[c];
                    let bytes = fetched.slice(start + meta_len + off..start + meta_len + off + len);
                    if crc32fast::hash(&bytes) != crc {
                        return Err(corrupt(format!("batch {i} column {c} checksum mismatch")));
                    }
                    msg.resize((meta_len + off) as usize, 0);
                    msg.extend_from_slice(&bytes);
                }
                Buffer::from(msg)
            }
            _ => {
                let data = fetched.slice(start..start + total);
                if crc32fast::hash(&data) != info.crc32 {
                    return Err(corrupt(format!("batch {i} checksum mismatch")));
                }
                Buffer::from(data)
            }
        };
        let batch = decoder.read_record_batch(b, &data)?.ok_or_else(|| corrupt(format!("batch {i} missing")))?;
        // Format 6 marks where each measure of a batch starts; their names
        // are in the footer, handed to the decoder with the batch.
        let names = index.batch_measures(i);
        let schema = batch
            .schema()
            .as_ref()
            .clone()
            .with_metadata(std::collections::HashMap::from([(BATCH_MEASURES_KEY.to_string(), names.join("\n"))]));
        out.push(batch.with_schema(Arc::new(schema))?);
    }
    Ok(out)
}

/// The byte ranges of a part holding batches `which`: whole messages, or
/// with `columns` (format 2) each message's metadata and those columns.
fn ranges_to_fetch(index: &PartIndex, which: &[usize], columns: Option<&[usize]>) -> std::result::Result<Vec<Range<u64>>, String> {
    let mut wanted = Vec::new();
    for &i in which {
        let b = &index.blocks[i];
        let start = b.offset() as u64;
        let info = &index.footer.batches[i];
        match (columns, info.meta) {
            (Some(cols), Some((meta_len, _))) => {
                wanted.push(start..start + meta_len);
                for &c in cols {
                    let ColumnRange(off, len, _) = *info.columns.get(c).ok_or_else(|| format!("batch {i} has no column {c}"))?;
                    wanted.push(start + meta_len + off..start + meta_len + off + len);
                }
            }
            _ => wanted.push(start..start + b.metaDataLength() as u64 + b.bodyLength() as u64),
        }
    }
    Ok(wanted)
}

/// Bytes fetched from one object, by offset.
struct Fetched(Vec<(u64, bytes::Bytes)>);

impl Fetched {
    /// The bytes at `r`, which lies inside one fetched range.
    fn slice(&self, r: Range<u64>) -> bytes::Bytes {
        let i = self.0.partition_point(|(start, _)| *start <= r.start) - 1;
        let (start, data) = &self.0[i];
        data.slice((r.start - start) as usize..(r.end - start) as usize)
    }
}

/// Fetches `ranges` of an object (nearby ones in one request, see
/// [`crate::get_ranges_coalesced`]). The store is asked for exactly these
/// ranges, so a caching store keys its entries by them: the metadata and
/// the columns of a batch are immutable units any later query reuses.
async fn fetch_coalesced(store: &dyn ObjectStore, path: &str, ranges: &[Range<u64>]) -> Result<Fetched> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    sorted.dedup();
    let datas = store.get_ranges(&path.into(), &sorted).await?;
    Ok(Fetched(sorted.iter().map(|r| r.start).zip(datas).collect()))
}

/// The blocks of `measure` in a record batch of the part (fetched with
/// [`fetch_batches`]), decoded in the `target` layout: the unit of a
/// streaming merge, held as typed columns rather than points (a batch of
/// 64K points is ~2 MB so, not ~10). A batch several measures share
/// is fetched once and decoded once per measure.
pub fn measure_blocks(
    path: &str,
    index: &PartIndex,
    batch: &RecordBatch,
    measure: &str,
    target: &ColumnLayout,
) -> Result<Vec<DecodedBlock>> {
    let stored = index
        .footer
        .measures
        .get(measure)
        .ok_or_else(|| StorageError::Corrupt { path: path.into(), reason: format!("no layout for measure {measure}") })?;
    let mapping = LayoutMapping::new(stored, target);
    let mut out = Vec::new();
    decode_blocks(path, index.format(), batch, &mapping, &Scan::everything(measure, target), &mut |b| out.push(b))?;
    Ok(out)
}

/// Decodes the blocks of a batch that overlap the scan into typed columns
/// of the target layout (columns the mapping leaves out read as null),
/// trimmed to the scan's time range, handing each to `out`.
pub fn decode_blocks(
    path: &str,
    format: u32,
    batch: &RecordBatch,
    mapping: &LayoutMapping,
    scan: &Scan<'_>,
    out: &mut dyn FnMut(DecodedBlock),
) -> Result<()> {
    let (begin, end) = (scan.begin, scan.end);
    // Format 3 bit-packs timestamps and versions; earlier formats wrote varints.
    let packed = format >= 3;
    let tag_used: Vec<bool> =
        (0..=mapping.tags.iter().flatten().max().map_or(0, |m| m + 1)).map(|i| mapping.tags.contains(&Some(i))).collect();
    let field_used: Vec<bool> =
        (0..=mapping.fields.iter().flatten().max().map_or(0, |m| m + 1)).map(|i| mapping.fields.contains(&Some(i))).collect();
    let corrupt = |what: &str| StorageError::Corrupt { path: path.into(), reason: format!("undecodable {what}") };
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| corrupt(&format!("column {name} (absent)")));
    // The Arrow footer carries no checksum: a column of another type is
    // corruption, not a panic.
    let mistyped = |name: &str| corrupt(&format!("column {name} (of another type)"));
    let binary = |name: &str| column(name)?.as_binary_opt::<i32>().ok_or_else(|| mistyped(name));
    let series = column("series_id")?.as_primitive_opt::<UInt64Type>().ok_or_else(|| mistyped("series_id"))?;
    // Earlier formats name every block's measure. Format 6 batches may hold
    // several measures: a block starting the next one holds a mark (the
    // blocks after it are empty), the names come from the footer (as
    // `fetch_batches` attaches them).
    let measures = column("measure")?.as_string_opt::<i32>().ok_or_else(|| mistyped("measure"))?;
    let mut names = batch.schema_ref().metadata().get(BATCH_MEASURES_KEY).map(|n| n.split('\n'));
    let mut measure = "";
    let count = column("count")?.as_primitive_opt::<UInt32Type>().ok_or_else(|| mistyped("count"))?;
    let min_ts = column("min_ts")?.as_primitive_opt::<Int64Type>().ok_or_else(|| mistyped("min_ts"))?;
    let max_ts = column("max_ts")?.as_primitive_opt::<Int64Type>().ok_or_else(|| mistyped("max_ts"))?;
    let (ts_col, ver_col, tag_col) = (binary("ts")?, binary("version")?, binary("tags")?);
    // Format 1 keeps every field of a block in one length-prefixed column;
    // format 2 one column per stored field (those not read are not decoded).
    let all_fields = batch.column_by_name("fields").map(|c| c.as_binary::<i32>());
    let field_cols: Vec<Option<&arrow_array::BinaryArray>> = (0..field_used.len())
        .map(|i| if field_used[i] { batch.column_by_name(&field_column(i)).map(|c| c.as_binary::<i32>()) } else { None })
        .collect();
    for row in 0..batch.num_rows() {
        // Names never hold the mark (`check_name`).
        match measures.value(row) {
            "" => {}
            NEXT_MEASURE => {
                let names = names.as_mut().ok_or_else(|| corrupt("measures (marks, but no names with the batch)"))?;
                measure = names.next().ok_or_else(|| corrupt("measures (more marks than names)"))?;
            }
            name => measure = name,
        }
        if measure != scan.measure
            || max_ts.value(row) < begin
            || min_ts.value(row) >= end
            || !scan.series_in(series.value(row), series.value(row))
        {
            continue;
        }
        let n = count.value(row) as usize;
        // Every FRAME timestamps take a byte at least: a count beyond what
        // the bytes can hold is corruption, refused before any column is
        // sized by it.
        if n > crate::part::codec::values_at_most(ts_col.value(row).len(), packed) {
            return Err(corrupt("count (more rows than the timestamps can hold)"));
        }
        // Columns are length-prefixed, so unused ones are skipped undecoded.
        let mut tags_buf = tag_col.value(row);
        let mut stored_tags: Vec<Option<TagColumn>> = Vec::new();
        while !tags_buf.is_empty() {
            let mut col = take_bytes(&mut tags_buf).ok_or_else(|| corrupt("tags"))?;
            let used = tag_used.get(stored_tags.len()).copied().unwrap_or(false);
            stored_tags.push(if used { Some(decode_tag_column(&mut col, n).ok_or_else(|| corrupt("tags"))?) } else { None });
        }
        let column = |t: usize| mapping.tags.get(t).copied().flatten().and_then(|s| stored_tags.get(s)).and_then(Option::as_ref);
        if let Some((cols, filter)) = scan.block_filter
            && cols.iter().all(|&t| column(t).is_none_or(|c| c.single().is_some()))
        {
            let first: Vec<TagVal> = (0..mapping.tags.len()).map(|t| column(t).map(|c| c.get(0).clone()).unwrap_or_default()).collect();
            if !filter(&first) {
                continue;
            }
        }
        let ts = if packed { decode_packed_timestamps(ts_col.value(row), n) } else { decode_timestamps(ts_col.value(row), n) };
        let ts = ts.ok_or_else(|| corrupt("timestamps"))?;
        let lo = ts.partition_point(|&t| t < begin);
        let hi = ts.partition_point(|&t| t < end);
        if lo >= hi {
            continue;
        }
        // Only rows [lo, hi) are kept: fields and versions decode just those.
        let versions = match scan.versions {
            // Format 6 writes no bytes for a block whose versions are all 0.
            true if format >= 6 && ver_col.value(row).is_empty() => vec![0; hi - lo],
            true => decode_ints_range(&mut ver_col.value(row), n, packed, lo, hi).ok_or_else(|| corrupt("versions"))?,
            false => Vec::new(),
        };
        let ts = if lo == 0 && hi == n { ts } else { ts[lo..hi].to_vec() };
        let mut stored_fields: Vec<Option<FieldColumn>> = Vec::new();
        match all_fields {
            Some(all) => {
                let mut fields_buf = all.value(row);
                while !fields_buf.is_empty() {
                    let mut col = take_bytes(&mut fields_buf).ok_or_else(|| corrupt("fields"))?;
                    let used = field_used.get(stored_fields.len()).copied().unwrap_or(false);
                    stored_fields.push(if used {
                        Some(decode_field_typed(&mut col, n, lo, hi).ok_or_else(|| corrupt("fields"))?)
                    } else {
                        None
                    });
                }
            }
            None => {
                for col in &field_cols {
                    // An empty value: the block's measure has fewer fields.
                    let decoded = match col.map(|c| c.value(row)) {
                        Some(mut bytes) if !bytes.is_empty() => {
                            Some(decode_field_typed(&mut bytes, n, lo, hi).ok_or_else(|| corrupt("fields"))?)
                        }
                        _ => None,
                    };
                    stored_fields.push(decoded);
                }
            }
        }
        let block = DecodedBlock {
            series: series.value(row),
            ts,
            versions,
            tags: mapping
                .tags
                .iter()
                .map(|s| {
                    let mut col = s
                        .and_then(|s| stored_tags.get_mut(s))
                        .and_then(Option::take)
                        .unwrap_or_else(|| TagColumn::constant(TagVal::Null, n));
                    col.slice(lo, hi);
                    col
                })
                .collect(),
            fields: mapping
                .fields
                .iter()
                .map(|s| s.and_then(|s| stored_fields.get_mut(s)).and_then(Option::take).unwrap_or(FieldColumn::Null))
                .collect(),
        };
        out(block);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::{MeasureRows, encode_part};
    use canopy_model::FieldVal;

    #[test]
    fn a_damaged_compressed_footer_is_refused() {
        use base64::Engine;
        let json = br#"{"format":4}"#;
        let packed = base64::engine::general_purpose::STANDARD_NO_PAD.encode(crate::zstd_json::compress(json));
        assert_eq!(unpack_footer(&packed).unwrap(), json);
        assert!(unpack_footer("not base64 !").is_err());
        assert!(unpack_footer(&packed[..packed.len() / 2]).is_err());
    }

    fn scan<'a>(
        measure: &'a str,
        target: &'a ColumnLayout,
        begin: i64,
        end: i64,
        series: Option<&'a [u64]>,
        keep: &'a (dyn Fn(&Point) -> bool + Sync),
    ) -> Scan<'a> {
        Scan { begin, end, series, keep, ..Scan::everything(measure, target) }
    }

    fn layout(tags: &[&str], fields: &[&str]) -> ColumnLayout {
        ColumnLayout {
            tags: tags.iter().map(|t| ("d".to_string(), t.to_string(), 1)).collect(),
            fields: fields.iter().map(|f| (f.to_string(), 4)).collect(),
        }
    }

    fn rows(series: u64, n: i64, hosts: &str) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                series,
                shard: 0,
                ts: 1_000 + i * 10,
                version: 0,
                tags: vec![TagVal::Str(hosts.into()), TagVal::Str(format!("z{}", i % 2))].into(),
                fields: vec![FieldVal::Float(i as f64 * 0.5)].into(),
            })
            .collect()
    }

    async fn put(parts: &[MeasureRows]) -> (Arc<dyn ObjectStore>, PartMeta) {
        let enc = encode_part(parts).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        store.put(&"p.arrow".into(), enc.bytes.clone().into()).await.unwrap();
        assert_eq!(enc.summary.bytes, enc.bytes.len() as u64);
        let meta = PartMeta::new(1, "p.arrow".into(), 0, 1 << 40, 1, 0, enc.summary);
        (store, meta)
    }

    #[tokio::test]
    async fn written_rows_read_back_with_range_and_filter() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let mut a = rows(1, 100, "h1");
        a.extend(rows(2, 50, "h2"));
        let (store, meta) = put(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows: a.clone() }]).await;
        assert_eq!(meta.rows, 150);
        assert_eq!(meta.measures["cpu"].series, 2);
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let all = scan_part(store.as_ref(), &meta, &idx, &scan("cpu", &l, i64::MIN, i64::MAX, None, &|_| true)).await.unwrap();
        assert_eq!(all, a);
        let z0 = |p: &Point| p.tags[1] == TagVal::Str("z0".into());
        let some = scan_part(store.as_ref(), &meta, &idx, &scan("cpu", &l, 1_100, 1_200, None, &z0)).await.unwrap();
        let expect: Vec<Point> =
            a.iter().filter(|p| p.ts >= 1_100 && p.ts < 1_200 && p.tags[1] == TagVal::Str("z0".into())).cloned().collect();
        assert_eq!(some, expect);
        assert!(scan_part(store.as_ref(), &meta, &idx, &scan("mem", &l, 0, i64::MAX, None, &|_| true)).await.unwrap().is_empty());
        let only2 = scan_part(store.as_ref(), &meta, &idx, &scan("cpu", &l, 0, i64::MAX, Some(&[2]), &|_| true)).await.unwrap();
        assert_eq!(only2, a[100..].to_vec());
        assert!(meta.measures["cpu"].may_hold_series(&[1]) && meta.measures["cpu"].may_hold_series(&[2]));
    }

    #[tokio::test]
    async fn small_measures_share_a_batch_and_each_reads_back_only_its_own_rows() {
        let one = Arc::new(layout(&["host", "zone"], &["v"]));
        let two = Arc::new(layout(&["host"], &["v", "w"]));
        let mut a = rows(1, 10, "h1");
        a.extend(rows(5, 10, "h5"));
        let b: Vec<Point> = rows(3, 7, "h3")
            .into_iter()
            .map(|mut p| {
                p.tags = vec![p.tags[0].clone()].into();
                p.fields.push(FieldVal::Int(p.ts));
                p
            })
            .collect();
        // Batches are cut only when full: `big`'s second series does not fit
        // the batch `a` started, and starts the one `c` joins.
        let mut big = rows(2, 40_000, "h2");
        big.extend(rows(4, 40_000, "h4"));
        let c = rows(9, 3, "h9");
        let parts = [
            MeasureRows { name: "a".into(), layout: one.clone(), rows: a.clone() },
            MeasureRows { name: "b".into(), layout: two.clone(), rows: b.clone() },
            MeasureRows { name: "big".into(), layout: one.clone(), rows: big.clone() },
            MeasureRows { name: "c".into(), layout: one.clone(), rows: c.clone() },
        ];
        let (store, meta) = put(&parts).await;
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        assert_eq!(idx.blocks.len(), 2);
        assert_eq!(
            (idx.batches_of("a"), idx.batches_of("b"), idx.batches_of("big"), idx.batches_of("c")),
            (vec![0], vec![0], vec![0, 1], vec![1])
        );
        for (name, l, want) in [("a", &one, &a), ("b", &two, &b), ("big", &one, &big), ("c", &one, &c)] {
            let got = scan_part(store.as_ref(), &meta, &idx, &scan(name, l, i64::MIN, i64::MAX, None, &|_| true)).await.unwrap();
            assert_eq!(&got, want, "{name}");
            assert_eq!(idx.series_matching(name, &[("host", &[want[0].tags[0].clone()])]), Some(vec![want[0].series]), "{name}");
        }
        // Series pruning still holds across a shared batch's mixed ids.
        let only5 = scan_part(store.as_ref(), &meta, &idx, &scan("a", &one, i64::MIN, i64::MAX, Some(&[5]), &|_| true)).await.unwrap();
        assert_eq!(only5, a[10..].to_vec());
        let batch = &fetch_batches(store.as_ref(), &meta, &idx, &[0], None).await.unwrap()[0];
        let blocks = measure_blocks(&meta.path, &idx, batch, "b", &two).unwrap();
        assert_eq!(blocks.iter().map(|b| (b.series, b.len())).collect::<Vec<_>>(), vec![(3, 7)]);
    }

    #[test]
    fn a_format_6_batch_without_its_measure_names_is_refused() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let parts = [
            MeasureRows { name: "a".into(), layout: l.clone(), rows: rows(1, 5, "h1") },
            MeasureRows { name: "b".into(), layout: l.clone(), rows: rows(2, 5, "h2") },
        ];
        let enc = encode_part(&parts).unwrap();
        let idx = PartIndex::parse("p", &enc.bytes).unwrap();
        // Read as a plain Arrow file: the batch lacks the names the footer holds.
        let batch =
            arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(enc.bytes.to_vec()), None).unwrap().next().unwrap().unwrap();
        let decode = |batch: &RecordBatch| {
            let mapping = scan_mapping(&idx, &Scan::everything("b", &l)).unwrap();
            let mut n = 0;
            decode_blocks("p", idx.format(), batch, &mapping, &Scan::everything("b", &l), &mut |b| n += b.len()).map(|()| n)
        };
        assert!(matches!(decode(&batch), Err(StorageError::Corrupt { .. })), "no names");
        let named = |names: &str| {
            let schema = batch
                .schema()
                .as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::from([(BATCH_MEASURES_KEY.to_string(), names.to_string())]));
            batch.clone().with_schema(Arc::new(schema)).unwrap()
        };
        assert_eq!(decode(&named("a\nb")).unwrap(), 5);
        assert!(matches!(decode(&named("a")), Err(StorageError::Corrupt { .. })), "more marks than names");
    }

    #[tokio::test]
    async fn a_block_filter_skips_blocks_whose_constant_tags_fail_it() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let mut a = rows(1, 10, "h1");
        a.extend(rows(2, 10, "h2"));
        let (store, meta) = put(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows: a.clone() }]).await;
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let all = |_: &Point| true;
        let host_is_h2 = |tags: &[TagVal]| tags[0] == TagVal::Str("h2".into());
        let mut scan = scan("cpu", &l, 0, i64::MAX, None, &all);
        scan.block_filter = Some((&[0], &host_is_h2));
        let got = scan_part(store.as_ref(), &meta, &idx, &scan).await.unwrap();
        assert_eq!(got, a[10..].to_vec(), "series 1's block is skipped whole");
        // "zone" alternates within a block: not constant, so the block is not
        // skipped on it and rows are left to the row filter.
        let zone_is_z0 = |tags: &[TagVal]| tags[1] == TagVal::Str("z0".into());
        scan.block_filter = Some((&[1], &zone_is_z0));
        assert_eq!(scan_part(store.as_ref(), &meta, &idx, &scan).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn one_field_of_ten_is_fetched_and_decoded_alone() {
        let l = Arc::new(layout(&["host", "zone"], &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]));
        let mut x = 7u64;
        let mut pts = Vec::new();
        for s in 0..20u64 {
            for i in 0..2000i64 {
                let fields = (0..10)
                    .map(|_| {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        FieldVal::Float((x >> 40) as f64 / 100.0)
                    })
                    .collect();
                pts.push(Point {
                    series: s,
                    shard: 0,
                    ts: 1_000 + i * 10,
                    version: 0,
                    tags: vec![TagVal::Str(format!("h{s}")), TagVal::Null].into(),
                    fields,
                });
            }
        }
        let (store, meta) = put(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows: pts.clone() }]).await;
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let all_batches: Vec<usize> = (0..idx.blocks.len()).collect();
        let one_field: Vec<usize> = (0..FIXED_COLUMNS.len()).chain([FIXED_COLUMNS.len() + 3]).collect();
        let bytes = |r: Vec<Range<u64>>| r.iter().map(|r| r.end - r.start).sum::<u64>();
        let fetched = bytes(ranges_to_fetch(&idx, &all_batches, Some(&one_field)).unwrap());
        assert!(fetched * 100 <= meta.bytes * 20, "one field of ten reads {fetched} of {} bytes", meta.bytes);
        let mut needed_fields = vec![false; 10];
        needed_fields[3] = true;
        let needed_tags = vec![true, false];
        let mut sc = scan("cpu", &l, 0, i64::MAX, None, &|_| true);
        sc.needed = Some((&needed_tags, &needed_fields));
        let got = scan_part(store.as_ref(), &meta, &idx, &sc).await.unwrap();
        assert_eq!(got.len(), pts.len());
        for (g, w) in got.iter().zip(&pts) {
            assert_eq!((g.ts, &g.tags[0], &g.fields[3]), (w.ts, &w.tags[0], &w.fields[3]));
            assert_eq!(g.fields[2], FieldVal::Null, "fields not asked for are not decoded");
        }
    }

    #[test]
    fn the_series_index_resolves_tag_values_to_series() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let mut a = rows(1, 10, "h1");
        a.extend(rows(2, 10, "h2"));
        a.extend(rows(3, 10, "h1"));
        let enc = encode_part(&[MeasureRows { name: "cpu".into(), layout: l, rows: a }]).unwrap();
        let idx = PartIndex::parse("p", &enc.bytes).unwrap();
        let host = |h: &str| TagVal::Str(h.into());
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h1")])]), Some(vec![1, 3]));
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h1"), host("h2")])]), Some(vec![1, 2, 3]));
        assert_eq!(
            idx.series_matching("cpu", &[("host", &[host("h2")]), ("zone", &[host("z0")])]),
            Some(vec![2]),
            "zone varies within blocks: every series holds z0"
        );
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h9")])]), Some(vec![]));
        assert_eq!(idx.series_matching("cpu", &[("rack", &[TagVal::Null])]), None, "a tag never stored reads as null everywhere");
        assert_eq!(idx.series_matching("cpu", &[("rack", &[host("r1")])]), Some(vec![]));
        assert_eq!(idx.series_matching("mem", &[("host", &[host("h1")])]), None, "no index for a measure the part lacks");
    }

    #[test]
    fn a_tag_that_names_its_series_resolves_by_hash_without_postings() {
        // `host` names each series (its id is the hash of the value), as an
        // agent measure's `__series__` does; `zone` does not.
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let host = |h: &str| TagVal::Str(h.into());
        let id = |h: &str| canopy_model::series_id("cpu", [&host(h)]);
        let mut a: Vec<Point> = ["h1", "h2", "h3"].iter().flat_map(|h| rows(id(h), 4, h)).collect();
        a.sort_by_key(|p| (p.series, p.ts));
        let enc = encode_part(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows: a.clone() }]).unwrap();
        let idx = PartIndex::parse("p", &enc.bytes).unwrap();
        assert_eq!(idx.footer.derived["cpu"].tags, vec!["host".to_string()]);
        assert!(!idx.footer.index["cpu"].contains_key("host"), "no postings stored for host");
        let mut want = vec![id("h1"), id("h3")];
        want.sort_unstable();
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h1"), host("h3"), host("h9")])]), Some(want));
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h2")]), ("zone", &[host("z1")])]), Some(vec![id("h2")]));
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h9")])]), Some(vec![]), "a value the part lacks");
        assert_eq!(idx.series_matching("cpu", &[("host", &[TagVal::Null, TagVal::Int(1)])]), Some(vec![]), "null, another type");
        // One series whose id is not its value's hash: host keeps its postings.
        a.extend(rows(5, 2, "h5"));
        a.sort_by_key(|p| (p.series, p.ts));
        let enc = encode_part(&[MeasureRows { name: "cpu".into(), layout: l, rows: a }]).unwrap();
        let idx = PartIndex::parse("p", &enc.bytes).unwrap();
        assert!(!idx.footer.derived.contains_key("cpu"));
        assert_eq!(idx.series_matching("cpu", &[("host", &[host("h5")])]), Some(vec![5]));
    }

    #[test]
    fn one_catalog_filter_holds_a_measures_series_and_tag_values() {
        use crate::FILTER_SERIES_MAX;
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let host = |h: &str| TagVal::Str(h.into());
        let id = |h: &str| canopy_model::series_id("cpu", [&host(h)]);
        let stats = |rows: Vec<Point>| {
            encode_part(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows }]).unwrap().summary.measures.remove("cpu").unwrap()
        };
        // `host` names its series: found through the series ids alone.
        let mut a: Vec<Point> = ["h1", "h2"].iter().flat_map(|h| rows(id(h), 4, h)).collect();
        a.sort_by_key(|p| (p.series, p.ts));
        let m = &stats(a);
        assert!(m.keys.is_some() && m.series_filter.is_none() && m.tag_filters.is_empty(), "{m:?}");
        assert!(!m.keys_without_series && m.keys_unfiltered.is_empty());
        assert!(m.may_hold_series(&[id("h1")]) && m.may_hold_series(&[7, id("h2")]));
        assert!(m.may_hold_tag("cpu", "host", &[host("h9"), host("h2")]) && m.may_hold_tag("cpu", "zone", &[host("z1")]));
        // Misses: a Bloom filter may let one through, but not all of these.
        let misses = (0..50).map(|i| format!("x{i}"));
        assert!(misses.clone().filter(|h| m.may_hold_series(&[id(h)])).count() < 10);
        assert!(misses.clone().filter(|h| m.may_hold_tag("cpu", "host", &[host(h)])).count() < 10);
        assert!(misses.filter(|z| m.may_hold_tag("cpu", "zone", &[host(z)])).count() < 10);
        assert!(m.may_hold_tag("cpu", "zone", &[host("z0")]) && !m.may_hold_tag("cpu", "host", &[host("z0")]), "keys name their tag");
        // More series than a filter takes: tags are still filtered, series not.
        let many: Vec<Point> =
            (0..FILTER_SERIES_MAX as u64 + 1).flat_map(|s| rows(s, 1, if s % 2 == 0 { "even" } else { "odd" })).collect();
        let m = &stats(many);
        assert!(m.keys_without_series && m.may_hold_series(&[u64::MAX]));
        assert!(m.may_hold_tag("cpu", "host", &[host("odd")]) && !m.may_hold_tag("cpu", "zone", &[host("z1")]), "every row is z0");
        // A tag with more values than a filter takes prunes nothing.
        let wide: Vec<Point> = (0..FILTER_SERIES_MAX as u64 + 1).flat_map(|s| rows(s, 1, &format!("h{s}"))).collect();
        let m = &stats(wide);
        assert_eq!(m.keys_unfiltered, vec!["host".to_string()]);
        assert!(m.may_hold_tag("cpu", "host", &[host("nowhere")]));
    }

    #[test]
    fn the_footer_bytes_a_summary_names_are_exactly_what_parsing_needs() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let enc = encode_part(&[MeasureRows { name: "cpu".into(), layout: l, rows: rows(1, 50, "h1") }]).unwrap();
        let (n, f) = (enc.bytes.len(), enc.summary.footer_bytes as usize);
        assert!(PartIndex::parse("p", &enc.bytes[n - f..]).is_ok());
        let short = PartIndex::parse("p", &enc.bytes[n - f + 1..]).expect_err("one byte short");
        assert!(short.to_string().contains("exceeds"), "{short}");
    }

    #[test]
    fn catalog_entries_from_before_the_one_filter_still_prune() {
        use crate::{SeriesFilter, tag_value_hash};
        let mut m = crate::MeasureStats {
            series_filter: SeriesFilter::build(&[1, 2]),
            tag_filters: std::collections::BTreeMap::from([(
                "zone".to_string(),
                SeriesFilter::build(&[tag_value_hash(&TagVal::Str("z0".into()))]).unwrap(),
            )]),
            ..Default::default()
        };
        assert!(m.may_hold_series(&[2]) && m.may_hold_tag("cpu", "zone", &[TagVal::Str("z0".into())]));
        assert!(m.may_hold_tag("cpu", "host", &[TagVal::Str("any".into())]), "no filter for host");
        let missing = (10..60u64).filter(|&i| m.may_hold_series(&[i])).count();
        assert!(missing < 10, "{missing}");
        m.series_filter = None;
        assert!(m.may_hold_series(&[99]));
    }

    #[tokio::test]
    async fn columns_added_after_the_write_read_as_null() {
        let old = Arc::new(layout(&["host", "zone"], &["v"]));
        let (store, meta) = put(&[MeasureRows { name: "cpu".into(), layout: old, rows: rows(1, 3, "h") }]).await;
        let new = layout(&["host", "rack", "zone"], &["v", "w"]);
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let got = scan_part(store.as_ref(), &meta, &idx, &scan("cpu", &new, 0, i64::MAX, None, &|_| true)).await.unwrap();
        assert_eq!(got[1].tags, vec![TagVal::Str("h".into()), TagVal::Null, TagVal::Str("z1".into())].into());
        assert_eq!(got[1].fields.to_vec(), vec![FieldVal::Float(0.5), FieldVal::Null]);
    }

    #[tokio::test]
    async fn a_flipped_byte_is_reported_as_corruption() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let enc = encode_part(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows: rows(1, 100, "h") }]).unwrap();
        let (store, meta) = put(&[MeasureRows { name: "cpu".into(), layout: l.clone(), rows: rows(1, 100, "h") }]).await;
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let mut bad = enc.bytes.to_vec();
        let b = idx.blocks[0];
        bad[b.offset() as usize + b.metaDataLength() as usize + 20] ^= 0xff;
        store.put(&"p.arrow".into(), bad.into()).await.unwrap();
        let err = scan_part(store.as_ref(), &meta, &idx, &scan("cpu", &l, 0, i64::MAX, None, &|_| true)).await.unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    /// A damaged part — anywhere in its blocks, index or footer — reads as
    /// an error (or, if the damage hit nothing read, as rows), never a panic.
    #[tokio::test]
    async fn damaged_parts_read_as_errors_without_panic() {
        let l = Arc::new(layout(&["host", "zone"], &["v"]));
        let mut all = rows(1, 300, "h1");
        all.extend(rows(2, 40, "h2"));
        let parts = [MeasureRows { name: "cpu".into(), layout: l.clone(), rows: all }];
        let enc = encode_part(&parts).unwrap();
        let (store, meta) = put(&parts).await;
        let undamaged = read_index(store.as_ref(), &meta).await.unwrap();
        assert_eq!(scan_part(store.as_ref(), &meta, &undamaged, &scan("cpu", &l, 0, i64::MAX, None, &|_| true)).await.unwrap().len(), 340);
        let mut m = canopy_model::testing::Mutator::new(11);
        let mut errors = 0;
        for _ in 0..300 {
            let bad = m.mutate(&enc.bytes);
            let mut meta = meta.clone();
            meta.bytes = bad.len() as u64;
            store.put(&"p.arrow".into(), bad.into()).await.unwrap();
            let read = async {
                let idx = read_index(store.as_ref(), &meta).await?;
                scan_part(store.as_ref(), &meta, &idx, &scan("cpu", &l, 0, i64::MAX, None, &|_| true)).await
            };
            errors += read.await.is_err() as usize;
        }
        assert!(errors > 150, "only {errors} of 300 damaged parts were noticed");
    }
}
