//! The part format: one Arrow IPC file (zstd-compressed buffers) per
//! (group, shard, segment) flush or compaction output.
//!
//! Each Arrow row is a *block*: the points of one series of one measure,
//! sorted by timestamp, with columns pre-encoded by [`codec`]
//! (delta-of-delta timestamps, delta ints or walk-coded gauges, XOR floats,
//! run-length tags).
//! Record batches hold blocks sorted by (measure, series id); from format
//! 6 measures share batches, which are cut only when full.
//! Format 2 gives every field its own Arrow column (`f0`, `f1`, ...), so
//! each field of a batch is its own zstd buffer at its own byte range.
//!
//! The footer (JSON, zstd-compressed, just before the Arrow footer from
//! format 8; in the Arrow footer's custom metadata before) holds the format
//! version, the column layout each measure was written with, per batch its
//! time range, series range, and the byte range and CRC32 of its metadata
//! and of each column, and per measure a series index (tag value → series
//! ids). A reader fetches the footer with one range read, resolves tag
//! criteria to series through the index, then fetches only the columns it
//! needs of the batches that hold those series.
//!
//! The object is a plain Arrow IPC file: `pyarrow.ipc.open_file` reads it.

mod block;
mod codec;
mod footer_blob;
mod rans;
mod raw_bits;
mod reader;
mod series_rows;
mod seven_bit;
mod walk;
mod writer;

use std::collections::BTreeMap;

use canopy_model::ColumnLayout;
use serde::{Deserialize, Serialize};

pub use block::{DecodedBlock, FieldColumn, TagColumn};
pub use reader::{
    BlockFilter, PartIndex, Scan, decode_blocks, fetch_batches, measure_blocks, read_index, scan_mapping, scan_part, select_batches,
};
pub use series_rows::{SeriesRows, push_tag_run};
pub use writer::{EncodedPart, MeasureRows, PartSummary, PartWriter, encode_part};

/// Footer metadata key holding [`PartFooter`] as JSON.
pub(crate) const FOOTER_KEY: &str = "canopy.part";
/// Where format 4 keeps the footer: the JSON, zstd-compressed, base64
/// (flatbuffer metadata values are strings). The JSON of a footer is
/// mostly repetition — hex tag values, column names per batch — and
/// shrinks ~10x.
pub(crate) const FOOTER_ZSTD_KEY: &str = "canopy.part.zst";
/// Schema metadata [`fetch_batches`] attaches to a fetched record batch:
/// the names of its measures in order, newline-separated (format 6 blocks
/// only mark where the next measure starts; names hold no newline).
pub(crate) const BATCH_MEASURES_KEY: &str = "canopy.batch.measures";
/// The mark a format-6 block carries in the `measure` column where the
/// next measure of its batch starts.
pub(crate) const NEXT_MEASURE: &str = "+";
/// Where format 6 keeps the footer: the JSON, zstd-compressed, as 7-bit
/// characters ([`seven_bit`]: 14 % longer than the bytes, base64 33 %).
pub(crate) const FOOTER_ZSTD7_KEY: &str = "canopy.part.z7";

/// The part format this build writes (the footer's `format`); readers
/// reject versions they do not know. Format 1 stored all fields of a block
/// in one `fields` column and had no series index; format 2 has a column
/// per field, column ranges and the index; format 3 (this build) bit-packs
/// timestamps, versions and integer-valued fields in frames of 128 instead
/// of writing varints (decoding 4-6x faster); format 4 stores the footer
/// zstd-compressed (under [`FOOTER_ZSTD_KEY`]) and aligns buffers to 8
/// bytes instead of 64 — together ~1.3 KB less per measure and part, which
/// is most of a small measure's cost; format 5 stores floats with up to 9
/// exact decimal places as scaled integers (formats 1-4: up to 6), which
/// takes in Go's durations in seconds; format 6 lets measures share
/// record batches (each batch of a part costs ~1 KB of Arrow metadata,
/// buffer frames and footer, and a Prometheus exports ~900 metric names,
/// most with a few series); format 7 leaves out of the series index the
/// tags that name their series outright — each value v held by exactly the
/// series `series_id(measure, [v])`, as an agent measure's `__series__` and
/// a one-tag entity do — which were most of a footer's bytes on real
/// Prometheus data (see [`SeriesIndex::derived`]); format 8 keeps the
/// compressed footer as raw bytes before the Arrow footer instead of as
/// 7-bit text in its metadata ([`footer_blob`]: 14 % of a footer); format 9
/// may code an integer-valued field column as a walk ([`walk`]: each value
/// range-coded from the one before under the column's model), where that is
/// smaller than bit-packing — ~6 % of a clamped gauge's bytes. A change to the
/// footer, the Arrow schema or the column codecs is a new format, with the
/// readers for the old ones kept and a golden file for each in `tests/fixtures`.
pub const PART_FORMAT: u32 = 9;
/// Formats this build reads.
pub(crate) const PART_FORMATS_READ: [u32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
/// Most series of one measure in a part that get a series index; a part
/// with more is scanned without one (its footer stays small).
pub const SERIES_INDEX_MAX: usize = 16_384;

/// What the footer says about the part: the on-disk type of format 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartFooter {
    pub(crate) format: u32,
    pub(crate) measures: BTreeMap<String, ColumnLayout>,
    pub(crate) batches: Vec<BatchInfo>,
    /// Per measure, per stored tag name: encoded tag value (hex) → sorted
    /// series ids holding it. Absent for format 1 and for measures with
    /// more than [`SERIES_INDEX_MAX`] series.
    /// Formats 2-5 store it so; format 6 stores `series_index` instead, which
    /// a reader expands into this.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) index: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<u64>>>>,
    /// Format 6: the series index per measure with each series id written
    /// once (a random 64-bit id is ~20 JSON digits that compress to ~9
    /// bytes; a measure's ids were repeated once per tag).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) series_index: BTreeMap<String, SeriesIndex>,
    /// Per measure, what its derived tags resolve against (filled by the
    /// reader from `series_index`; not stored).
    #[serde(skip)]
    pub(crate) derived: BTreeMap<String, Derived>,
}

/// A measure's tags left out of its series index because each value names
/// its series by hash, and the series ids they resolve against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived {
    pub(crate) tags: Vec<String>,
    /// Every series of the measure in the part, sorted.
    pub(crate) ids: Vec<u64>,
}

/// One measure's series index as format 6 stores it: the sorted series ids,
/// and per stored tag, encoded value (hex) → positions in `ids`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SeriesIndex {
    pub(crate) ids: Vec<u64>,
    pub(crate) tags: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    /// Format 7: tags whose every value v is held by exactly the series
    /// `series_id(measure, [v])` (checked when written), so a lookup hashes
    /// the value instead of reading a posting list. Their postings are not
    /// stored: one key per series, as long as the series' whole label set
    /// for an agent measure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) derived: Vec<String>,
}

impl SeriesIndex {
    /// Packs one measure's index (tag → value → sorted ids), leaving out
    /// the postings of the `derived` tags (their series still count in `ids`).
    pub(crate) fn pack(by_tag: &BTreeMap<String, BTreeMap<String, Vec<u64>>>, derived: Vec<String>) -> SeriesIndex {
        let mut ids: Vec<u64> = by_tag.values().flat_map(|values| values.values().flatten().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        let at = |id: &u64| ids.binary_search(id).expect("collected above") as u32;
        let tags = by_tag
            .iter()
            .filter(|(t, _)| !derived.contains(t))
            .map(|(t, values)| (t.clone(), values.iter().map(|(v, s)| (v.clone(), s.iter().map(at).collect())).collect()))
            .collect();
        SeriesIndex { ids, tags, derived }
    }

    /// The index as tag → value → sorted ids; `None` if a position is out of range.
    pub(crate) fn unpack(&self) -> Option<BTreeMap<String, BTreeMap<String, Vec<u64>>>> {
        self.tags
            .iter()
            .map(|(t, values)| {
                let values = values
                    .iter()
                    .map(|(v, at)| Some((v.clone(), at.iter().map(|&i| self.ids.get(i as usize).copied()).collect::<Option<Vec<u64>>>()?)))
                    .collect::<Option<BTreeMap<_, _>>>()?;
                Some((t.clone(), values))
            })
            .collect()
    }
}

/// Statistics and checksum of one record batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BatchInfo {
    /// The measure of the batch's first block.
    pub(crate) measure: String,
    /// Format 6: the measures whose blocks follow the first measure's in
    /// this batch, in order (measures share batches, cut only when full).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) shared: Vec<String>,
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    /// Least and greatest series id of the batch's blocks (of a batch of
    /// one measure: its first and last block's).
    pub(crate) first_series: u64,
    pub(crate) last_series: u64,
    pub(crate) points: u64,
    /// CRC32 of the batch's IPC message (metadata + body) as stored.
    pub(crate) crc32: u32,
    /// Format 2: length and CRC32 of the message's metadata (the start of
    /// the batch), then per Arrow column its byte range in the body and CRC32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) meta: Option<(u64, u32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) columns: Vec<ColumnRange>,
}

impl BatchInfo {
    /// True if the batch holds blocks of `measure`.
    pub(crate) fn holds(&self, measure: &str) -> bool {
        self.measure == measure || self.shared.iter().any(|m| m == measure)
    }
}

/// A column's buffers in a batch body: offset, length, CRC32.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ColumnRange(pub(crate) u64, pub(crate) u64, pub(crate) u32);

/// Columns before the field columns, in order; readers of any format find
/// them by name.
pub(crate) const FIXED_COLUMNS: [&str; 8] = ["measure", "series_id", "count", "min_ts", "max_ts", "ts", "version", "tags"];

/// Name of the Arrow column holding stored field `i` (format 2).
pub(crate) fn field_column(i: usize) -> String {
    format!("f{i}")
}

/// Arrow schema of a format-2 part whose widest measure has `fields` fields.
pub(crate) fn arrow_schema(fields: usize) -> arrow_schema::Schema {
    use arrow_schema::{DataType, Field};
    let fixed = [DataType::Utf8, DataType::UInt64, DataType::UInt32, DataType::Int64, DataType::Int64];
    let mut cols: Vec<Field> = FIXED_COLUMNS
        .iter()
        .zip(fixed.into_iter().chain(std::iter::repeat(DataType::Binary)))
        .map(|(n, t)| Field::new(*n, t, false))
        .collect();
    cols.extend((0..fields).map(|i| Field::new(field_column(i), DataType::Binary, false)));
    arrow_schema::Schema::new(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_series_index_unpacks_to_what_was_packed() {
        let by_tag: BTreeMap<String, BTreeMap<String, Vec<u64>>> = BTreeMap::from([
            ("host".to_string(), BTreeMap::from([("01".to_string(), vec![7, u64::MAX]), ("02".to_string(), vec![3])])),
            ("zone".to_string(), BTreeMap::from([("03".to_string(), vec![3, 7, u64::MAX])])),
        ]);
        let packed = SeriesIndex::pack(&by_tag, Vec::new());
        assert_eq!(packed.ids, vec![3, 7, u64::MAX], "each id once");
        let without_host = SeriesIndex::pack(&by_tag, vec!["host".into()]);
        assert_eq!((without_host.ids.clone(), without_host.tags.len()), (packed.ids.clone(), 1), "a derived tag's series still count");
        assert_eq!(packed.tags["zone"]["03"], vec![0, 1, 2]);
        assert_eq!(packed.unpack(), Some(by_tag));
        let mut bad = packed;
        bad.tags.get_mut("host").unwrap().insert("04".into(), vec![3]);
        assert_eq!(bad.unpack(), None, "a position past the ids");
    }
}
