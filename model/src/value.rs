//! Typed tag and field values, their conversion from and to the protobuf API,
//! and a compact binary form used by the WAL and the part format.

use std::cmp::Ordering;

use canopy_api::v1::{self, field_value, tag_value};

/// A tag value. Tags identify and describe series; `Null` is an absent tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TagVal {
    #[default]
    Null,
    Str(String),
    Int(i64),
    StrArray(Vec<String>),
    IntArray(Vec<i64>),
    Binary(Vec<u8>),
}

/// A field value: the measured quantity of a point.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FieldVal {
    #[default]
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Binary(Vec<u8>),
    Bool(bool),
}

impl TagVal {
    /// The name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            TagVal::Null => "null",
            TagVal::Str(_) => "string",
            TagVal::Int(_) => "int",
            TagVal::StrArray(_) => "string array",
            TagVal::IntArray(_) => "int array",
            TagVal::Binary(_) => "binary",
        }
    }

    /// Converts from the API form; an unset oneof is null.
    pub fn from_proto(v: &v1::TagValue) -> TagVal {
        match &v.value {
            None | Some(tag_value::Value::Null(_)) => TagVal::Null,
            Some(tag_value::Value::Str(s)) => TagVal::Str(s.value.clone()),
            Some(tag_value::Value::Int(i)) => TagVal::Int(i.value),
            Some(tag_value::Value::StrArray(a)) => TagVal::StrArray(a.value.clone()),
            Some(tag_value::Value::IntArray(a)) => TagVal::IntArray(a.value.clone()),
            Some(tag_value::Value::BinaryData(b)) => TagVal::Binary(b.clone()),
        }
    }

    /// Converts to the API form.
    pub fn to_proto(&self) -> v1::TagValue {
        let value = match self {
            TagVal::Null => tag_value::Value::Null(0),
            TagVal::Str(s) => tag_value::Value::Str(v1::Str { value: s.clone() }),
            TagVal::Int(i) => tag_value::Value::Int(v1::Int { value: *i }),
            TagVal::StrArray(a) => tag_value::Value::StrArray(v1::StrArray { value: a.clone() }),
            TagVal::IntArray(a) => tag_value::Value::IntArray(v1::IntArray { value: a.clone() }),
            TagVal::Binary(b) => tag_value::Value::BinaryData(b.clone()),
        };
        v1::TagValue { value: Some(value) }
    }

    /// Appends the binary form: a type byte, then the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            TagVal::Null => out.push(0),
            TagVal::Str(s) => {
                out.push(1);
                put_bytes(out, s.as_bytes());
            }
            TagVal::Int(i) => {
                out.push(2);
                put_varint(out, zigzag(*i));
            }
            TagVal::StrArray(a) => {
                out.push(3);
                put_varint(out, a.len() as u64);
                for s in a {
                    put_bytes(out, s.as_bytes());
                }
            }
            TagVal::IntArray(a) => {
                out.push(4);
                put_varint(out, a.len() as u64);
                for i in a {
                    put_varint(out, zigzag(*i));
                }
            }
            TagVal::Binary(b) => {
                out.push(5);
                put_bytes(out, b);
            }
        }
    }

    /// Reads a value written by [`TagVal::encode`]; `None` on corrupt input.
    pub fn decode(buf: &mut &[u8]) -> Option<TagVal> {
        let kind = take_byte(buf)?;
        Some(match kind {
            0 => TagVal::Null,
            1 => TagVal::Str(take_string(buf)?),
            2 => TagVal::Int(unzigzag(take_varint(buf)?)),
            3 => {
                let n = take_len(buf)?;
                let mut a = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    a.push(take_string(buf)?);
                }
                TagVal::StrArray(a)
            }
            4 => {
                let n = take_len(buf)?;
                let mut a = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    a.push(unzigzag(take_varint(buf)?));
                }
                TagVal::IntArray(a)
            }
            5 => TagVal::Binary(take_bytes(buf)?.to_vec()),
            _ => return None,
        })
    }

    /// Compares two values of the same scalar type; `None` if not comparable.
    pub fn compare(&self, other: &TagVal) -> Option<Ordering> {
        match (self, other) {
            (TagVal::Str(a), TagVal::Str(b)) => Some(a.cmp(b)),
            (TagVal::Int(a), TagVal::Int(b)) => Some(a.cmp(b)),
            (TagVal::Binary(a), TagVal::Binary(b)) => Some(a.cmp(b)),
            (TagVal::StrArray(a), TagVal::StrArray(b)) => Some(a.cmp(b)),
            (TagVal::IntArray(a), TagVal::IntArray(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

impl FieldVal {
    /// The name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldVal::Null => "null",
            FieldVal::Int(_) => "int",
            FieldVal::Float(_) => "float",
            FieldVal::Str(_) => "string",
            FieldVal::Binary(_) => "binary",
            FieldVal::Bool(_) => "bool",
        }
    }

    /// Converts from the API form; an unset oneof is null.
    pub fn from_proto(v: &v1::FieldValue) -> FieldVal {
        match &v.value {
            None | Some(field_value::Value::Null(_)) => FieldVal::Null,
            Some(field_value::Value::Int(i)) => FieldVal::Int(i.value),
            Some(field_value::Value::Float(f)) => FieldVal::Float(f.value),
            Some(field_value::Value::Str(s)) => FieldVal::Str(s.value.clone()),
            Some(field_value::Value::BinaryData(b)) => FieldVal::Binary(b.clone()),
            Some(field_value::Value::Bool(b)) => FieldVal::Bool(b.value),
        }
    }

    /// Converts to the API form.
    pub fn to_proto(&self) -> v1::FieldValue {
        let value = match self {
            FieldVal::Null => field_value::Value::Null(0),
            FieldVal::Int(i) => field_value::Value::Int(v1::Int { value: *i }),
            FieldVal::Float(f) => field_value::Value::Float(v1::Float { value: *f }),
            FieldVal::Str(s) => field_value::Value::Str(v1::Str { value: s.clone() }),
            FieldVal::Binary(b) => field_value::Value::BinaryData(b.clone()),
            FieldVal::Bool(b) => field_value::Value::Bool(v1::Bool { value: *b }),
        };
        v1::FieldValue { value: Some(value) }
    }

    /// The value as a number, for aggregation; `None` for null and non-numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldVal::Int(i) => Some(*i as f64),
            FieldVal::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Appends the binary form: a type byte, then the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            FieldVal::Null => out.push(0),
            FieldVal::Int(i) => {
                out.push(1);
                put_varint(out, zigzag(*i));
            }
            FieldVal::Float(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            FieldVal::Str(s) => {
                out.push(3);
                put_bytes(out, s.as_bytes());
            }
            FieldVal::Binary(b) => {
                out.push(4);
                put_bytes(out, b);
            }
            FieldVal::Bool(b) => out.push(if *b { 6 } else { 5 }),
        }
    }

    /// Reads a value written by [`FieldVal::encode`]; `None` on corrupt input.
    pub fn decode(buf: &mut &[u8]) -> Option<FieldVal> {
        Some(match take_byte(buf)? {
            0 => FieldVal::Null,
            1 => FieldVal::Int(unzigzag(take_varint(buf)?)),
            2 => {
                let (head, rest) = buf.split_at_checked(8)?;
                *buf = rest;
                FieldVal::Float(f64::from_le_bytes(head.try_into().ok()?))
            }
            3 => FieldVal::Str(take_string(buf)?),
            4 => FieldVal::Binary(take_bytes(buf)?.to_vec()),
            5 => FieldVal::Bool(false),
            6 => FieldVal::Bool(true),
            _ => return None,
        })
    }
}

/// ZigZag-maps a signed integer so small magnitudes give small varints.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint; `None` if truncated or longer than 10 bytes.
pub fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = take_byte(buf)?;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a length-prefixed byte string.
pub fn take_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_len(buf)?;
    let (head, rest) = buf.split_at_checked(n)?;
    *buf = rest;
    Some(head)
}

/// Reads a varint used as a length, bounded by the bytes left so corrupt
/// input cannot trigger a huge allocation.
pub fn take_len(buf: &mut &[u8]) -> Option<usize> {
    let n = take_varint(buf)? as usize;
    (n <= buf.len()).then_some(n)
}

fn take_string(buf: &mut &[u8]) -> Option<String> {
    String::from_utf8(take_bytes(buf)?.to_vec()).ok()
}

fn take_byte(buf: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = buf.split_first()?;
    *buf = rest;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values_round_trip_through_binary_form() {
        let vals = [
            TagVal::Null,
            TagVal::Str("héllo".into()),
            TagVal::Int(-42),
            TagVal::StrArray(vec!["a".into(), "".into()]),
            TagVal::IntArray(vec![i64::MIN, 0, i64::MAX]),
            TagVal::Binary(vec![0, 255]),
        ];
        let mut buf = Vec::new();
        for v in &vals {
            v.encode(&mut buf);
        }
        let mut rest = buf.as_slice();
        for v in &vals {
            assert_eq!(&TagVal::decode(&mut rest).unwrap(), v);
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn field_values_round_trip_and_truncation_is_detected() {
        let vals = [
            FieldVal::Null,
            FieldVal::Int(7),
            FieldVal::Bool(true),
            FieldVal::Float(-0.5),
            FieldVal::Bool(false),
            FieldVal::Str("x".into()),
        ];
        let mut buf = Vec::new();
        for v in &vals {
            v.encode(&mut buf);
        }
        let mut rest = buf.as_slice();
        for v in &vals {
            assert_eq!(&FieldVal::decode(&mut rest).unwrap(), v);
        }
        let mut truncated = &buf[..buf.len() - 1];
        let decoded: Vec<_> = std::iter::from_fn(|| FieldVal::decode(&mut truncated)).collect();
        assert_eq!(decoded.len(), 5, "the truncated last value must not decode");
    }

    #[test]
    fn zigzag_is_an_involution_at_the_extremes() {
        for v in [0, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
