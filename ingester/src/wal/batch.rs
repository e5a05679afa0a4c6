//! The payload of a WAL record: points of one measure, with the column
//! layout and schema revision they were validated against, so replay after
//! a schema change maps them by name like any other stored data.
//!
//! On disk, format 2 (written today): `[2]`, group, measure (length-prefixed
//! UTF-8), revision and segment width (zigzag varints), the layout (tags:
//! family, name, type; fields: name, type), then the series of the batch
//! once each (series id u64 LE, shard, tag values), then the points (index of
//! their series in that list, ts, version, field values). Points repeat their
//! series' tags, so each series' tags are written (and, on replay, allocated)
//! once per record.
//!
//! Format 1 (read only): the same header, then each point with its series
//! id, shard and tag values inline. A new layout gets a new format byte and
//! its own decoder here; old ones stay readable.

use std::sync::Arc;

use canopy_model::codec::{put_bytes, put_varint, take_bytes, take_len, take_varint, unzigzag, zigzag};
use canopy_model::{ColumnLayout, FieldVal, FieldVals, IdMap, Point, TagVal, Tags, TagsInterner};

/// Points inline with their tags (read only).
const BATCH_FORMAT_V1: u8 = 1;
/// Series once per record, points by series index: written today.
const BATCH_FORMAT_V2: u8 = 2;

/// Why a WAL payload is not a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDecodeError {
    #[error("empty WAL payload")]
    Empty,
    #[error("unknown WAL batch format {0} (this build reads formats 1 and 2)")]
    UnknownFormat(u8),
    #[error("WAL batch cut short in {0}")]
    Truncated(&'static str),
    #[error("WAL batch: {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("WAL batch: segment width {0}ns is out of range")]
    SegmentWidth(i64),
    #[error("WAL batch: {0} bytes left after the last point")]
    TrailingBytes(usize),
    #[error("WAL batch: a point names series {index} of {count}")]
    SeriesIndex { index: u64, count: usize },
}

/// One WAL record's content.
#[derive(Debug, Clone, PartialEq)]
pub struct WalBatch {
    pub group: String,
    pub measure: String,
    pub revision: i64,
    /// The group's segment width when the points were written, so a flush
    /// right after recovery lays parts out by the right segments.
    pub segment_nanos: i64,
    pub layout: Arc<ColumnLayout>,
    pub points: Vec<Point>,
}

impl WalBatch {
    /// A batch of validated points of one measure, named and laid out by its schema.
    pub fn for_schema(schema: &canopy_model::MeasureSchema, points: Vec<Point>) -> WalBatch {
        WalBatch {
            group: schema.group.name.clone(),
            measure: schema.name.clone(),
            revision: schema.revision,
            segment_nanos: schema.group.segment_nanos,
            layout: schema.layout.clone(),
            points,
        }
    }
}

/// The header both formats share, after the format byte.
fn encode_header(out: &mut Vec<u8>, b: &WalBatch) {
    put_bytes(out, b.group.as_bytes());
    put_bytes(out, b.measure.as_bytes());
    put_varint(out, zigzag(b.revision));
    put_varint(out, zigzag(b.segment_nanos));
    put_varint(out, b.layout.tags.len() as u64);
    for (fam, name, ty) in &b.layout.tags {
        put_bytes(out, fam.as_bytes());
        put_bytes(out, name.as_bytes());
        put_varint(out, *ty as u64);
    }
    put_varint(out, b.layout.fields.len() as u64);
    for (name, ty) in &b.layout.fields {
        put_bytes(out, name.as_bytes());
        put_varint(out, *ty as u64);
    }
}

/// Encodes a batch in format 1, for ingesters of the release before format 2
/// (a liaison upgraded first sends them this when they refuse format 2).
pub fn encode_batch_v1(b: &WalBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + b.points.len() * 64);
    out.push(BATCH_FORMAT_V1);
    encode_header(&mut out, b);
    put_varint(&mut out, b.points.len() as u64);
    for p in &b.points {
        out.extend_from_slice(&p.series.to_le_bytes());
        put_varint(&mut out, p.shard as u64);
        put_varint(&mut out, zigzag(p.ts));
        put_varint(&mut out, zigzag(p.version));
        p.tags.iter().for_each(|t| t.encode(&mut out));
        p.fields.iter().for_each(|f| f.encode(&mut out));
    }
    out
}

/// True when `message` is an ingester's refusal of a batch format it does not
/// know (one of the release before format 2).
pub fn is_unknown_format(message: &str) -> bool {
    message.contains("unknown WAL batch format")
}

/// Encodes a batch as a WAL payload (format 2).
pub fn encode_batch(b: &WalBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + b.points.len() * 24);
    out.push(BATCH_FORMAT_V2);
    encode_header(&mut out, b);
    // The series list: a point whose tags equal the last kept for its series
    // (the same allocation, usually) reuses that entry.
    let mut series: Vec<(u64, u32, &Tags)> = Vec::new();
    // Series ids are hashes already: a fast id map, not SipHash.
    let mut index: IdMap<u64, usize> = IdMap::default();
    let mut point_series = Vec::with_capacity(b.points.len());
    for p in &b.points {
        let i = match index.get(&p.series) {
            Some(&i) if series[i].1 == p.shard && (std::sync::Arc::ptr_eq(series[i].2, &p.tags) || *series[i].2 == p.tags) => i,
            _ => {
                series.push((p.series, p.shard, &p.tags));
                index.insert(p.series, series.len() - 1);
                series.len() - 1
            }
        };
        point_series.push(i);
    }
    put_varint(&mut out, series.len() as u64);
    for (id, shard, tags) in &series {
        out.extend_from_slice(&id.to_le_bytes());
        put_varint(&mut out, *shard as u64);
        debug_assert_eq!(tags.len(), b.layout.tags.len());
        tags.iter().for_each(|t| t.encode(&mut out));
    }
    put_varint(&mut out, b.points.len() as u64);
    for (p, i) in b.points.iter().zip(point_series) {
        put_varint(&mut out, i as u64);
        put_varint(&mut out, zigzag(p.ts));
        put_varint(&mut out, zigzag(p.version));
        p.fields.iter().for_each(|f| f.encode(&mut out));
    }
    out
}

/// A batch cut into pieces whose encodings each fit in `max_bytes`, with
/// those encodings (`encoded` is the whole batch's, when the caller has it).
/// Fails only when a single point is larger than `max_bytes`.
pub fn split_to_fit(batch: WalBatch, encoded: Option<Vec<u8>>, max_bytes: usize) -> Result<Vec<(WalBatch, Vec<u8>)>, String> {
    let payload = encoded.unwrap_or_else(|| encode_batch(&batch));
    if payload.len() <= max_bytes {
        return Ok(vec![(batch, payload)]);
    }
    if batch.points.len() <= 1 {
        return Err(format!("a point of {} bytes once encoded is over the WAL record limit of {max_bytes} bytes", payload.len()));
    }
    drop(payload);
    // Halve until each piece fits: only oversized batches pay the re-encoding.
    let mut first = batch;
    let second_points = first.points.split_off(first.points.len() / 2);
    let second = WalBatch { points: second_points, ..first.clone_header() };
    let mut out = split_to_fit(first, None, max_bytes)?;
    out.extend(split_to_fit(second, None, max_bytes)?);
    Ok(out)
}

impl WalBatch {
    /// The batch's names, revision and layout, with no points.
    fn clone_header(&self) -> WalBatch {
        WalBatch {
            group: self.group.clone(),
            measure: self.measure.clone(),
            revision: self.revision,
            segment_nanos: self.segment_nanos,
            layout: self.layout.clone(),
            points: Vec::new(),
        }
    }
}

fn string(buf: &mut &[u8], what: &'static str) -> Result<String, BatchDecodeError> {
    let bytes = take_bytes(buf).ok_or(BatchDecodeError::Truncated(what))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| BatchDecodeError::NotUtf8(what))
}

fn varint(buf: &mut &[u8], what: &'static str) -> Result<u64, BatchDecodeError> {
    take_varint(buf).ok_or(BatchDecodeError::Truncated(what))
}

fn len(buf: &mut &[u8], what: &'static str) -> Result<usize, BatchDecodeError> {
    take_len(buf).ok_or(BatchDecodeError::Truncated(what))
}

/// Decodes a WAL payload of any known format.
pub fn decode_batch(buf: &[u8]) -> Result<WalBatch, BatchDecodeError> {
    let (&format, rest) = buf.split_first().ok_or(BatchDecodeError::Empty)?;
    match format {
        BATCH_FORMAT_V1 => decode_v1(rest),
        BATCH_FORMAT_V2 => decode_v2(rest),
        other => Err(BatchDecodeError::UnknownFormat(other)),
    }
}

/// The header both formats share; `buf` is left at the first byte after it.
fn decode_header(b: &mut &[u8]) -> Result<WalBatch, BatchDecodeError> {
    let group = string(b, "group")?;
    let measure = string(b, "measure")?;
    let revision = unzigzag(varint(b, "revision")?);
    let segment_nanos = unzigzag(varint(b, "segment width")?);
    if !(1..=canopy_model::INTERVAL_NANOS_MAX).contains(&segment_nanos) {
        return Err(BatchDecodeError::SegmentWidth(segment_nanos));
    }
    let mut layout = ColumnLayout::default();
    for _ in 0..len(b, "layout")? {
        layout.tags.push((string(b, "tag family")?, string(b, "tag name")?, varint(b, "tag type")? as i32));
    }
    for _ in 0..len(b, "layout")? {
        layout.fields.push((string(b, "field name")?, varint(b, "field type")? as i32));
    }
    Ok(WalBatch { group, measure, revision, segment_nanos, layout: Arc::new(layout), points: Vec::new() })
}

fn series_id(b: &mut &[u8]) -> Result<u64, BatchDecodeError> {
    let (sid, rest) = b.split_at_checked(8).ok_or(BatchDecodeError::Truncated("series id"))?;
    *b = rest;
    Ok(u64::from_le_bytes(sid.try_into().expect("8 bytes")))
}

fn values<T, C: FromIterator<T>>(
    b: &mut &[u8],
    n: usize,
    decode: fn(&mut &[u8]) -> Option<T>,
    what: &'static str,
) -> Result<C, BatchDecodeError> {
    (0..n).map(|_| decode(b).ok_or(BatchDecodeError::Truncated(what))).collect()
}

fn decode_v1(mut buf: &[u8]) -> Result<WalBatch, BatchDecodeError> {
    let b = &mut buf;
    let mut batch = decode_header(b)?;
    let (tag_count, field_count) = (batch.layout.tags.len(), batch.layout.fields.len());
    let n = len(b, "point count")?;
    let mut points = Vec::with_capacity(n.min(1 << 20));
    // Format 1 repeats a series' tags per point; share them once decoded.
    let mut tags = TagsInterner::default();
    for _ in 0..n {
        let series = series_id(b)?;
        let shard = varint(b, "shard")? as u32;
        let ts = unzigzag(varint(b, "timestamp")?);
        let version = unzigzag(varint(b, "version")?);
        let values_of_tags: Vec<TagVal> = values(b, tag_count, TagVal::decode, "tag value")?;
        let fields: FieldVals = values(b, field_count, FieldVal::decode, "field value")?;
        points.push(Point { series, shard, ts, version, tags: tags.intern_values(series, values_of_tags), fields });
    }
    if !b.is_empty() {
        return Err(BatchDecodeError::TrailingBytes(b.len()));
    }
    batch.points = points;
    Ok(batch)
}

fn decode_v2(mut buf: &[u8]) -> Result<WalBatch, BatchDecodeError> {
    let b = &mut buf;
    let mut batch = decode_header(b)?;
    let (tag_count, field_count) = (batch.layout.tags.len(), batch.layout.fields.len());
    let series_count = len(b, "series count")?;
    let mut series = Vec::with_capacity(series_count.min(1 << 16));
    for _ in 0..series_count {
        let id = series_id(b)?;
        let shard = varint(b, "shard")? as u32;
        let tags: Tags = values::<_, Vec<TagVal>>(b, tag_count, TagVal::decode, "tag value")?.into();
        series.push((id, shard, tags));
    }
    let n = len(b, "point count")?;
    // Bounded: a point can take three bytes of a payload that may come over the network.
    let mut points = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let index = varint(b, "series index")?;
        let (id, shard, tags) = series.get(index as usize).ok_or(BatchDecodeError::SeriesIndex { index, count: series.len() })?;
        let ts = unzigzag(varint(b, "timestamp")?);
        let version = unzigzag(varint(b, "version")?);
        let fields: FieldVals = values(b, field_count, FieldVal::decode, "field value")?;
        points.push(Point { series: *id, shard: *shard, ts, version, tags: tags.clone(), fields });
    }
    if !b.is_empty() {
        return Err(BatchDecodeError::TrailingBytes(b.len()));
    }
    batch.points = points;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_trailing_garbage_is_rejected() {
        let b = WalBatch {
            group: "g".into(),
            measure: "cpu".into(),
            revision: 3,
            segment_nanos: 3_600_000_000_000,
            layout: Arc::new(ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: vec![("v".into(), 4), ("n".into(), 2)] }),
            points: vec![Point {
                series: 42,
                shard: 1,
                ts: -5,
                version: 2,
                tags: vec![TagVal::Str("h".into())].into(),
                fields: vec![FieldVal::Float(1.5), FieldVal::Null].into(),
            }],
        };
        let mut enc = encode_batch(&b);
        assert_eq!(decode_batch(&enc), Ok(b));
        enc.push(0);
        assert_eq!(decode_batch(&enc), Err(BatchDecodeError::TrailingBytes(1)));
        assert_eq!(decode_batch(&enc[..enc.len() - 3]), Err(BatchDecodeError::Truncated("field value")));
        assert_eq!(decode_batch(&[9]), Err(BatchDecodeError::UnknownFormat(9)));
    }

    #[test]
    fn a_series_is_written_once_per_record_and_its_points_share_its_tags_on_replay() {
        let layout = Arc::new(ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: vec![("v".into(), 2)] });
        let host = |h: &str| -> Tags { vec![TagVal::Str(h.repeat(40))].into() };
        let (a, b) = (host("a"), host("b"));
        let point = |series: u64, tags: &Tags, ts: i64| Point {
            series,
            shard: 3,
            ts,
            version: 0,
            tags: tags.clone(),
            fields: vec![FieldVal::Int(ts)].into(),
        };
        // Two series, interleaved; the second's tags change midway (a non-entity tag may).
        let changed = host("c");
        let points = vec![point(1, &a, 1), point(2, &b, 1), point(1, &a, 2), point(2, &changed, 2), point(1, &host("a"), 3)];
        let batch = WalBatch { group: "g".into(), measure: "m".into(), revision: 1, segment_nanos: 1, layout, points };
        let enc = encode_batch(&batch);
        // Three distinct (series, tags): 40 bytes of tag value each, written once.
        assert!(enc.len() < 3 * 40 + 5 * 8 + 80, "{} bytes", enc.len());
        let back = decode_batch(&enc).unwrap();
        assert_eq!(back, batch);
        assert!(Arc::ptr_eq(&back.points[0].tags, &back.points[2].tags) && Arc::ptr_eq(&back.points[0].tags, &back.points[4].tags));
        assert!(!Arc::ptr_eq(&back.points[1].tags, &back.points[3].tags));
        // A point naming a series the record does not list.
        let mut bad = enc.clone();
        let first_point = bad.len() - 5 * 4; // each point: index, ts, version, one small int field
        bad[first_point] = 9;
        assert_eq!(decode_batch(&bad), Err(BatchDecodeError::SeriesIndex { index: 9, count: 3 }));
    }

    #[test]
    fn the_format_1_encoder_still_writes_what_format_1_decodes() {
        let layout = Arc::new(ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: vec![("v".into(), 2)] });
        let tags: Tags = vec![TagVal::Str("h".into())].into();
        let points = (0..3)
            .map(|ts| Point { series: 1, shard: 0, ts, version: 0, tags: tags.clone(), fields: vec![FieldVal::Int(ts)].into() })
            .collect();
        let batch = WalBatch { group: "g".into(), measure: "m".into(), revision: 1, segment_nanos: 1, layout, points };
        let v1 = encode_batch_v1(&batch);
        assert_eq!(v1[0], BATCH_FORMAT_V1);
        assert_eq!(decode_batch(&v1), Ok(batch));
        assert!(is_unknown_format(&BatchDecodeError::UnknownFormat(2).to_string()));
        // What the release before format 2 answers (its ingester's message, verbatim).
        assert!(is_unknown_format("batch: unknown WAL batch format 2 (this build reads format 1)"));
    }

    #[test]
    fn oversized_batches_split_into_pieces_that_fit_and_keep_every_point_in_order() {
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                series: i,
                shard: 0,
                ts: i as i64,
                version: 0,
                tags: vec![TagVal::Str("x".repeat(i as usize * 10))].into(),
                fields: vec![].into(),
            })
            .collect();
        let b = WalBatch {
            group: "g".into(),
            measure: "m".into(),
            revision: 1,
            segment_nanos: 1,
            layout: Arc::new(ColumnLayout { tags: vec![("d".into(), "t".into(), 1)], fields: vec![] }),
            points: points.clone(),
        };
        let whole = encode_batch(&b).len();
        let pieces = split_to_fit(b.clone(), None, whole / 5).unwrap();
        assert!(pieces.len() >= 5);
        for (piece, enc) in &pieces {
            assert!(enc.len() <= whole / 5);
            assert_eq!(decode_batch(enc).as_ref(), Ok(piece));
        }
        let back: Vec<Point> = pieces.into_iter().flat_map(|(p, _)| p.points).collect();
        assert_eq!(back, points);
        assert_eq!(split_to_fit(b.clone(), None, whole).unwrap().len(), 1);
        assert!(split_to_fit(b, None, 100).unwrap_err().contains("over the WAL record limit"));
    }

    /// Damaged or random WAL records (format 2 and format 1) are refused
    /// with an error, never a panic or an allocation out of proportion.
    #[test]
    fn damaged_records_are_refused_without_panic_or_outsized_allocation() {
        let layout = Arc::new(ColumnLayout {
            tags: vec![("d".into(), "host".into(), 1), ("d".into(), "zone".into(), 1)],
            fields: vec![("v".into(), 4), ("n".into(), 2), ("s".into(), 1)],
        });
        let points: Vec<Point> = (0..40)
            .map(|i| Point {
                series: i % 5,
                shard: 1,
                ts: 1_700_000_000_000_000_000 + i as i64,
                version: i as i64 % 3,
                tags: vec![TagVal::Str(format!("h{}", i % 5)), TagVal::Str("z1".into())].into(),
                fields: vec![FieldVal::Float(i as f64 / 3.0), FieldVal::Int(i as i64), FieldVal::Str("x".repeat(i as usize % 7))].into(),
            })
            .collect();
        let b = WalBatch { group: "g".into(), measure: "cpu".into(), revision: 3, segment_nanos: 3_600_000_000_000, layout, points };
        let valid = vec![encode_batch(&b), encode_batch_v1(&b)];
        canopy_model::testing::fuzz_decoder("WAL batch", &valid, 20_000, decode_batch);
    }
}
