//! The part format: one Arrow IPC file (zstd-compressed buffers) per
//! (group, shard, segment) flush or compaction output.
//!
//! Each Arrow row is a *block*: the points of one series of one measure,
//! sorted by timestamp, with columns pre-encoded by [`codec`]
//! (delta-of-delta timestamps, delta ints, XOR floats, run-length tags).
//! Record batches hold blocks of a single measure, sorted by series id.
//! The footer's custom metadata `canopy.part` (JSON) holds the format
//! version, the column layout each measure was written with, and per batch
//! its time range, series range and CRC32 — so a reader fetches the footer
//! with one range read, then only the batches it needs.
//!
//! The object is a plain Arrow IPC file: `pyarrow.ipc.open_file` reads it.

mod block;
mod codec;
mod reader;
mod writer;

use std::collections::BTreeMap;

use canopy_model::ColumnLayout;
use serde::{Deserialize, Serialize};

pub use block::{DecodedBlock, FieldColumn, TagColumn};
pub use reader::{
    BlockFilter, PartIndex, Scan, decode_blocks, fetch_batches, read_blocks, read_index, scan_mapping, scan_part, select_batches,
};
pub use writer::{EncodedPart, MeasureRows, PartSummary, PartWriter, encode_part};

/// Footer metadata key holding [`PartFooter`] as JSON.
pub(crate) const FOOTER_KEY: &str = "canopy.part";
/// The part format this build writes (the footer's `format`); readers
/// reject versions they do not know. Format 1 is the only one so far: a
/// change to the footer, the Arrow schema or the column codecs is format 2,
/// with the reader for 1 kept and a golden file for each in `tests/fixtures`.
pub const PART_FORMAT: u32 = 1;

/// What the footer says about the part: the on-disk type of format 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartFooter {
    pub(crate) format: u32,
    pub(crate) measures: BTreeMap<String, ColumnLayout>,
    pub(crate) batches: Vec<BatchInfo>,
}

/// Statistics and checksum of one record batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BatchInfo {
    pub(crate) measure: String,
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    pub(crate) first_series: u64,
    pub(crate) last_series: u64,
    pub(crate) points: u64,
    /// CRC32 of the batch's IPC message (metadata + body) as stored.
    pub(crate) crc32: u32,
}

/// Arrow schema shared by every part.
pub(crate) fn arrow_schema() -> arrow_schema::Schema {
    use arrow_schema::{DataType, Field};
    arrow_schema::Schema::new(vec![
        Field::new("measure", DataType::Utf8, false),
        Field::new("series_id", DataType::UInt64, false),
        Field::new("count", DataType::UInt32, false),
        Field::new("min_ts", DataType::Int64, false),
        Field::new("max_ts", DataType::Int64, false),
        Field::new("ts", DataType::Binary, false),
        Field::new("version", DataType::Binary, false),
        Field::new("tags", DataType::Binary, false),
        Field::new("fields", DataType::Binary, false),
    ])
}
