//! Binary forms of what cluster roles exchange about a query: memtable rows
//! (ingester → querier) and partial results (querier → liaison). Compact,
//! and exact for every value (NaN payloads and signed zeros included), which
//! JSON is not.

use std::collections::HashMap;

use crate::aggregate::AggState;
use crate::exact_sum::ExactSum;
use crate::point::{FieldVals, Point};
use crate::result::{GroupKey, PartialResult};
use crate::tags::TagsInterner;
use crate::value::{FieldVal, TagVal, put_varint, take_len, take_varint, unzigzag, zigzag};

const ROWS_FORMAT: u8 = 1;
const PARTIAL_RAW: u8 = 1;
/// Kind 2 carried float sums as one f64; 3 carries them exact.
const PARTIAL_GROUPS: u8 = 3;

fn put_point(out: &mut Vec<u8>, p: &Point) {
    out.extend_from_slice(&p.series.to_le_bytes());
    put_varint(out, p.shard as u64);
    put_varint(out, zigzag(p.ts));
    put_varint(out, zigzag(p.version));
    put_varint(out, p.tags.len() as u64);
    p.tags.iter().for_each(|t| t.encode(out));
    put_varint(out, p.fields.len() as u64);
    p.fields.iter().for_each(|f| f.encode(out));
}

fn take_u64(b: &mut &[u8]) -> Option<u64> {
    let (head, rest) = b.split_first_chunk::<8>()?;
    *b = rest;
    Some(u64::from_le_bytes(*head))
}

/// A point; its tags shared with earlier points of its series through `tags`.
fn take_point(b: &mut &[u8], interner: &mut TagsInterner) -> Option<Point> {
    let series = take_u64(b)?;
    let shard = u32::try_from(take_varint(b)?).ok()?;
    let ts = unzigzag(take_varint(b)?);
    let version = unzigzag(take_varint(b)?);
    let tags = (0..take_len(b)?).map(|_| TagVal::decode(b)).collect::<Option<Vec<_>>>()?;
    let fields = (0..take_len(b)?).map(|_| FieldVal::decode(b)).collect::<Option<FieldVals>>()?;
    Some(Point { series, shard, ts, version, tags: interner.intern_values(series, tags), fields })
}

/// Encodes memtable rows with their WAL sequence numbers.
pub fn encode_rows(rows: &[(u64, Point)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + rows.len() * 48);
    out.push(ROWS_FORMAT);
    put_varint(&mut out, rows.len() as u64);
    for (seq, p) in rows {
        put_varint(&mut out, *seq);
        put_point(&mut out, p);
    }
    out
}

/// Decodes [`encode_rows`]; `None` if the bytes are not valid rows.
pub fn decode_rows(mut b: &[u8]) -> Option<Vec<(u64, Point)>> {
    let b = &mut b;
    let (&format, rest) = b.split_first()?;
    *b = rest;
    if format != ROWS_FORMAT {
        return None;
    }
    let n = take_len(b)?;
    let mut rows = Vec::with_capacity(n.min(1 << 20));
    let mut tags = TagsInterner::default();
    for _ in 0..n {
        let seq = take_varint(b)?;
        rows.push((seq, take_point(b, &mut tags)?));
    }
    b.is_empty().then_some(rows)
}

fn put_opt_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => out.push(0),
        Some(f) => {
            out.push(1);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
}

fn take_opt_f64(b: &mut &[u8]) -> Option<Option<f64>> {
    let (&flag, rest) = b.split_first()?;
    *b = rest;
    match flag {
        0 => Some(None),
        1 => Some(Some(f64::from_bits(take_u64(b)?))),
        _ => None,
    }
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(0),
        Some(i) => {
            out.push(1);
            put_varint(out, zigzag(i));
        }
    }
}

fn take_opt_i64(b: &mut &[u8]) -> Option<Option<i64>> {
    let (&flag, rest) = b.split_first()?;
    *b = rest;
    match flag {
        0 => Some(None),
        1 => Some(Some(unzigzag(take_varint(b)?))),
        _ => None,
    }
}

fn put_opt_valued(out: &mut Vec<u8>, v: &Option<(i64, FieldVal)>) {
    match v {
        None => out.push(0),
        Some((ts, f)) => {
            out.push(1);
            put_varint(out, zigzag(*ts));
            f.encode(out);
        }
    }
}

fn take_opt_valued(b: &mut &[u8]) -> Option<Option<(i64, FieldVal)>> {
    let (&flag, rest) = b.split_first()?;
    *b = rest;
    match flag {
        0 => Some(None),
        1 => Some(Some((unzigzag(take_varint(b)?), FieldVal::decode(b)?))),
        _ => None,
    }
}

fn put_state(out: &mut Vec<u8>, s: &AggState) {
    put_varint(out, s.count);
    out.extend_from_slice(&s.sum_int.to_le_bytes());
    s.sum_float.encode(out);
    put_opt_f64(out, s.min);
    put_opt_f64(out, s.max);
    put_opt_i64(out, s.min_int);
    put_opt_i64(out, s.max_int);
    put_opt_valued(out, &s.last);
    put_opt_valued(out, &s.first);
}

fn take_state(b: &mut &[u8]) -> Option<AggState> {
    let count = take_varint(b)?;
    let (sum, rest) = b.split_first_chunk::<16>()?;
    *b = rest;
    let sum_int = i128::from_le_bytes(*sum);
    let sum_float = ExactSum::decode(b)?;
    Some(AggState {
        count,
        sum_int,
        sum_float,
        min: take_opt_f64(b)?,
        max: take_opt_f64(b)?,
        min_int: take_opt_i64(b)?,
        max_int: take_opt_i64(b)?,
        last: take_opt_valued(b)?,
        first: take_opt_valued(b)?,
    })
}

/// Encodes one shard's partial result.
pub fn encode_partial(p: &PartialResult) -> Vec<u8> {
    let mut out = Vec::new();
    match p {
        PartialResult::Raw(rows) => {
            out.push(PARTIAL_RAW);
            put_varint(&mut out, rows.len() as u64);
            rows.iter().for_each(|r| put_point(&mut out, r));
        }
        PartialResult::Groups(groups) => {
            out.push(PARTIAL_GROUPS);
            put_varint(&mut out, groups.len() as u64);
            for ((bucket, tags), states) in groups {
                put_varint(&mut out, zigzag(*bucket));
                put_varint(&mut out, tags.len() as u64);
                tags.iter().for_each(|t| t.encode(&mut out));
                put_varint(&mut out, states.len() as u64);
                states.iter().for_each(|s| put_state(&mut out, s));
            }
        }
    }
    out
}

/// Decodes [`encode_partial`]; `None` if the bytes are not a partial result.
pub fn decode_partial(mut b: &[u8]) -> Option<PartialResult> {
    let b = &mut b;
    let (&kind, rest) = b.split_first()?;
    *b = rest;
    let n = take_len(b)?;
    let out = match kind {
        PARTIAL_RAW => {
            let mut tags = TagsInterner::default();
            PartialResult::Raw((0..n).map(|_| take_point(b, &mut tags)).collect::<Option<Vec<_>>>()?)
        }
        PARTIAL_GROUPS => {
            let mut groups: HashMap<GroupKey, Vec<AggState>> = HashMap::with_capacity(n.min(1 << 20));
            for _ in 0..n {
                let bucket = unzigzag(take_varint(b)?);
                let tags = (0..take_len(b)?).map(|_| TagVal::decode(b)).collect::<Option<Vec<_>>>()?;
                let states = (0..take_len(b)?).map(|_| take_state(b)).collect::<Option<Vec<_>>>()?;
                groups.insert((bucket, tags), states);
            }
            PartialResult::Groups(groups)
        }
        _ => return None,
    };
    b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: i64) -> Point {
        Point {
            series: 0xdead_beef_0000 + i as u64,
            shard: 3,
            ts: -5 + i,
            version: i * 7,
            tags: vec![TagVal::Str(format!("h{i}")), TagVal::Null, TagVal::Int(-i)].into(),
            fields: vec![FieldVal::Float(f64::from_bits(0x7ff0_0000_0000_0002)), FieldVal::Int(i), FieldVal::Null, FieldVal::Float(-0.0)]
                .into(),
        }
    }

    fn same_bits(a: &[FieldVal], b: &[FieldVal]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (FieldVal::Float(x), FieldVal::Float(y)) => x.to_bits() == y.to_bits(),
                _ => x == y,
            })
    }

    #[test]
    fn rows_round_trip_bit_exact() {
        let rows: Vec<(u64, Point)> = (0..5).map(|i| (100 + i as u64, point(i))).collect();
        let back = decode_rows(&encode_rows(&rows)).unwrap();
        assert_eq!(back.len(), rows.len());
        for ((s1, p1), (s2, p2)) in rows.iter().zip(&back) {
            assert_eq!((s1, p1.series, p1.shard, p1.ts, p1.version, &p1.tags), (s2, p2.series, p2.shard, p2.ts, p2.version, &p2.tags));
            assert!(same_bits(&p1.fields, &p2.fields), "{:?} vs {:?}", p1.fields, p2.fields);
        }
        let enc = encode_rows(&rows);
        assert!(decode_rows(&enc[..enc.len() - 1]).is_none(), "truncated rows are refused");
    }

    #[test]
    fn partial_groups_round_trip() {
        let mut s = AggState::default();
        s.add(&FieldVal::Int(5), 10);
        s.add(&FieldVal::Int(-3), 20);
        let mut f = AggState::default();
        f.add(&FieldVal::Float(1.5), 30);
        let groups: HashMap<GroupKey, Vec<AggState>> =
            [((60, vec![TagVal::Str("a".into())]), vec![s.clone(), f.clone()]), ((0, vec![]), vec![AggState::default()])].into();
        let back = decode_partial(&encode_partial(&PartialResult::Groups(groups.clone()))).unwrap();
        let PartialResult::Groups(back) = back else { panic!("kind changed") };
        assert_eq!(back.len(), 2);
        let states = &back[&(60, vec![TagVal::Str("a".into())])];
        assert_eq!(
            (states[0].count, states[0].sum_int, states[0].min_int, states[0].last.clone()),
            (2, 2, Some(-3), Some((20, FieldVal::Int(-3))))
        );
        assert_eq!((states[1].sum_float.value(), states[1].max), (1.5, Some(1.5)));
    }

    #[test]
    fn partial_raw_round_trip() {
        let rows: Vec<Point> = (0..3).map(point).collect();
        let PartialResult::Raw(back) = decode_partial(&encode_partial(&PartialResult::Raw(rows.clone()))).unwrap() else {
            panic!("kind changed")
        };
        assert_eq!(back.len(), rows.len());
        for (b, r) in back.iter().zip(&rows) {
            assert_eq!((b.series, b.shard, b.ts, b.version, &b.tags), (r.series, r.shard, r.ts, r.version, &r.tags));
            assert!(same_bits(&b.fields, &r.fields), "{:?} != {:?}", b.fields, r.fields);
        }
        assert!(decode_partial(&[9, 0]).is_none());
    }

    #[test]
    fn damaged_or_random_input_is_refused_without_panic_or_outsized_allocation() {
        use crate::testing::fuzz_decoder;
        let rows: Vec<(u64, Point)> = (0..6).map(|i| (100 + i as u64, point(i))).collect();
        fuzz_decoder("wire rows", &[encode_rows(&rows), encode_rows(&[])], 20_000, decode_rows);
        let mut s = AggState::default();
        s.add(&FieldVal::Int(5), 10);
        s.add(&FieldVal::Float(2.5), 11);
        let groups: HashMap<GroupKey, Vec<AggState>> = [((60, vec![TagVal::Str("a".into()), TagVal::Int(4)]), vec![s.clone(), s])].into();
        let partials = [encode_partial(&PartialResult::Groups(groups)), encode_partial(&PartialResult::Raw((0..4).map(point).collect()))];
        fuzz_decoder("wire partial results", &partials, 20_000, decode_partial);
    }
}
