//! Encoding sorted rows into a part.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use bytes::Bytes;
use canopy_model::codec::put_bytes;
use canopy_model::{ColumnLayout, FieldVal, Point};

use super::codec::{encode_field_column, encode_ints, encode_tag_runs, encode_timestamps};
use super::{BatchInfo, FOOTER_KEY, FORMAT_VERSION, PartFooter, arrow_schema};
use crate::Result;
use crate::SeriesFilter;
use crate::catalog::MeasureStats;

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
    /// Length of the Arrow footer plus its 10-byte trailer.
    pub footer_bytes: u64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub measures: BTreeMap<String, MeasureStats>,
}

/// Encodes measures (each sorted and deduplicated) into one part.
pub fn encode_part(measures: &[MeasureRows]) -> Result<EncodedPart> {
    let schema = Arc::new(arrow_schema());
    let opts = IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
    let mut w = FileWriter::try_new_with_options(Vec::new(), &schema, opts)?;
    let mut footer = PartFooter { format: FORMAT_VERSION, measures: BTreeMap::new(), batches: Vec::new() };
    let mut stats = BTreeMap::new();
    for m in measures {
        debug_assert!(m.rows.windows(2).all(|w| (w[0].series, w[0].ts) < (w[1].series, w[1].ts)), "rows sorted and unique");
        if m.rows.is_empty() {
            continue;
        }
        footer.measures.insert(m.name.clone(), (*m.layout).clone());
        stats.insert(m.name.clone(), measure_stats(m));
        let blocks = split_series(&m.rows);
        let mut start = 0;
        while start < blocks.len() {
            let mut end = start;
            let mut points = 0;
            while end < blocks.len() && end - start < BATCH_BLOCKS_MAX && (end == start || points + blocks[end].len() <= BATCH_POINTS_MAX) {
                points += blocks[end].len();
                end += 1;
            }
            let batch = encode_batch(&schema, &m.name, &blocks[start..end])?;
            let before = w.get_ref().len();
            w.write(&batch)?;
            let after = w.get_ref().len();
            footer.batches.push(BatchInfo {
                measure: m.name.clone(),
                min_ts: blocks[start..end].iter().map(|b| b[0].ts).min().expect("non-empty"),
                max_ts: blocks[start..end].iter().map(|b| b[b.len() - 1].ts).max().expect("non-empty"),
                first_series: blocks[start][0].series,
                last_series: blocks[end - 1][0].series,
                points: points as u64,
                crc32: crc32fast::hash(&w.get_ref()[before..after]),
            });
            start = end;
        }
    }
    w.write_metadata(FOOTER_KEY, serde_json::to_string(&footer).expect("footer serializes"));
    w.finish()?;
    let bytes = w.into_inner()?;
    let trailer: [u8; 10] = bytes[bytes.len() - 10..].try_into().expect("10 bytes");
    let footer_bytes = arrow_ipc::reader::read_footer_length(trailer)? as u64 + 10;
    let rows = stats.values().map(|s| s.rows).sum();
    Ok(EncodedPart {
        bytes: Bytes::from(bytes),
        footer_bytes,
        rows,
        min_ts: stats.values().map(|s| s.min_ts).min().unwrap_or(0),
        max_ts: stats.values().map(|s| s.max_ts).max().unwrap_or(0),
        measures: stats,
    })
}

fn split_series(rows: &[Point]) -> Vec<&[Point]> {
    rows.chunk_by(|a, b| a.series == b.series).collect()
}

fn measure_stats(m: &MeasureRows) -> MeasureStats {
    let mut fields = BTreeMap::new();
    for (i, (name, _)) in m.layout.fields.iter().enumerate() {
        let nums = m.rows.iter().filter_map(|r| r.fields.get(i).and_then(FieldVal::as_f64)).filter(|v| !v.is_nan());
        let mm = nums.fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))));
        if let Some(mm) = mm {
            fields.insert(name.clone(), mm);
        }
    }
    let series: Vec<u64> = m.rows.iter().map(|r| r.series).collect::<HashSet<_>>().into_iter().collect();
    MeasureStats {
        rows: m.rows.len() as u64,
        series: series.len() as u64,
        series_filter: SeriesFilter::build(&series),
        min_ts: m.rows.iter().map(|r| r.ts).min().unwrap_or(0),
        max_ts: m.rows.iter().map(|r| r.ts).max().unwrap_or(0),
        fields,
    }
}

fn encode_batch(schema: &Arc<arrow_schema::Schema>, measure: &str, blocks: &[&[Point]]) -> Result<RecordBatch> {
    let n = blocks.len();
    let mut measure_col = StringBuilder::with_capacity(n, n * measure.len());
    let mut series = UInt64Builder::with_capacity(n);
    let mut count = UInt32Builder::with_capacity(n);
    let mut min_ts = Int64Builder::with_capacity(n);
    let mut max_ts = Int64Builder::with_capacity(n);
    let (mut ts_col, mut ver_col, mut tag_col, mut field_col) =
        (BinaryBuilder::new(), BinaryBuilder::new(), BinaryBuilder::new(), BinaryBuilder::new());
    let mut buf = Vec::new();
    let mut col = Vec::new();
    for b in blocks {
        measure_col.append_value(measure);
        series.append_value(b[0].series);
        count.append_value(b.len() as u32);
        min_ts.append_value(b[0].ts);
        max_ts.append_value(b[b.len() - 1].ts);

        buf.clear();
        encode_timestamps(&b.iter().map(|p| p.ts).collect::<Vec<_>>(), &mut buf);
        ts_col.append_value(&buf);

        buf.clear();
        encode_ints(&b.iter().map(|p| p.version).collect::<Vec<_>>(), &mut buf);
        ver_col.append_value(&buf);

        buf.clear();
        let ntags = b[0].tags.len();
        for t in 0..ntags {
            col.clear();
            encode_tag_runs(&b.iter().map(|p| &p.tags[t]).collect::<Vec<_>>(), &mut col);
            put_bytes(&mut buf, &col);
        }
        tag_col.append_value(&buf);

        buf.clear();
        let nfields = b[0].fields.len();
        for f in 0..nfields {
            col.clear();
            encode_field_column(&b.iter().map(|p| &p.fields[f]).collect::<Vec<_>>(), &mut col);
            put_bytes(&mut buf, &col);
        }
        field_col.append_value(&buf);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(measure_col.finish()),
        Arc::new(series.finish()),
        Arc::new(count.finish()),
        Arc::new(min_ts.finish()),
        Arc::new(max_ts.finish()),
        Arc::new(ts_col.finish()),
        Arc::new(ver_col.finish()),
        Arc::new(tag_col.finish()),
        Arc::new(field_col.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
