//! The payload of a WAL record: points of one measure, with the column
//! layout and schema revision they were validated against, so replay after
//! a schema change maps them by name like any other stored data.

use std::sync::Arc;

use canopy_model::codec::{put_bytes, put_varint, take_bytes, take_len, take_varint, unzigzag, zigzag};
use canopy_model::{ColumnLayout, FieldVal, Point, TagVal};

const BATCH_FORMAT: u8 = 1;

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

/// Encodes a batch as a WAL payload.
pub fn encode_batch(b: &WalBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + b.points.len() * 64);
    out.push(BATCH_FORMAT);
    put_bytes(&mut out, b.group.as_bytes());
    put_bytes(&mut out, b.measure.as_bytes());
    put_varint(&mut out, zigzag(b.revision));
    put_varint(&mut out, zigzag(b.segment_nanos));
    put_varint(&mut out, b.layout.tags.len() as u64);
    for (fam, name, ty) in &b.layout.tags {
        put_bytes(&mut out, fam.as_bytes());
        put_bytes(&mut out, name.as_bytes());
        put_varint(&mut out, *ty as u64);
    }
    put_varint(&mut out, b.layout.fields.len() as u64);
    for (name, ty) in &b.layout.fields {
        put_bytes(&mut out, name.as_bytes());
        put_varint(&mut out, *ty as u64);
    }
    put_varint(&mut out, b.points.len() as u64);
    for p in &b.points {
        out.extend_from_slice(&p.series.to_le_bytes());
        put_varint(&mut out, p.shard as u64);
        put_varint(&mut out, zigzag(p.ts));
        put_varint(&mut out, zigzag(p.version));
        debug_assert_eq!(p.tags.len(), b.layout.tags.len());
        p.tags.iter().for_each(|t| t.encode(&mut out));
        p.fields.iter().for_each(|f| f.encode(&mut out));
    }
    out
}

fn string(buf: &mut &[u8]) -> Option<String> {
    String::from_utf8(take_bytes(buf)?.to_vec()).ok()
}

/// Decodes a WAL payload; `None` if it is not a valid batch.
pub fn decode_batch(mut buf: &[u8]) -> Option<WalBatch> {
    let b = &mut buf;
    let (&format, rest) = b.split_first()?;
    *b = rest;
    if format != BATCH_FORMAT {
        return None;
    }
    let group = string(b)?;
    let measure = string(b)?;
    let revision = unzigzag(take_varint(b)?);
    let segment_nanos = unzigzag(take_varint(b)?);
    if segment_nanos <= 0 {
        return None;
    }
    let mut layout = ColumnLayout::default();
    for _ in 0..take_len(b)? {
        layout.tags.push((string(b)?, string(b)?, take_varint(b)? as i32));
    }
    for _ in 0..take_len(b)? {
        layout.fields.push((string(b)?, take_varint(b)? as i32));
    }
    let n = take_len(b)?;
    let mut points = Vec::with_capacity(n);
    for _ in 0..n {
        let (sid, rest) = b.split_at_checked(8)?;
        *b = rest;
        let series = u64::from_le_bytes(sid.try_into().ok()?);
        let shard = take_varint(b)? as u32;
        let ts = unzigzag(take_varint(b)?);
        let version = unzigzag(take_varint(b)?);
        let tags = (0..layout.tags.len()).map(|_| TagVal::decode(b)).collect::<Option<Vec<_>>>()?;
        let fields = (0..layout.fields.len()).map(|_| FieldVal::decode(b)).collect::<Option<Vec<_>>>()?;
        points.push(Point { series, shard, ts, version, tags, fields });
    }
    b.is_empty().then_some(WalBatch { group, measure, revision, segment_nanos, layout: Arc::new(layout), points })
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
                tags: vec![TagVal::Str("h".into())],
                fields: vec![FieldVal::Float(1.5), FieldVal::Null],
            }],
        };
        let mut enc = encode_batch(&b);
        assert_eq!(decode_batch(&enc).unwrap(), b);
        enc.push(0);
        assert!(decode_batch(&enc).is_none());
    }
}
