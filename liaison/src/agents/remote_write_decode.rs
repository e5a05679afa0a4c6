//! Prometheus remote-write requests decoded in place: label names and values
//! are borrowed from the decompressed body, so a request costs no allocation
//! per sample or label (prost would allocate two strings per label and a
//! vector per series). Protobuf semantics as prost applies them: fields in
//! any order, unknown fields skipped, the last of a repeated scalar wins.

/// One time series of a request: its label fields as sent, and its samples
/// (value, timestamp in milliseconds).
#[derive(Debug, Default)]
pub(crate) struct Series<'a> {
    /// The label fields' bytes, from the first to the end of the last (with
    /// anything sent between them): equal bytes are equal labels, so a caller
    /// that has seen these before need not parse them (see [`Series::labels`]).
    pub(crate) raw_labels: &'a [u8],
    pub(crate) samples: Vec<(f64, i64)>,
}

impl<'a> Series<'a> {
    /// The labels, in the order sent, into `out` (cleared first).
    pub(crate) fn labels(&self, out: &mut Vec<(&'a str, &'a str)>) -> Result<(), DecodeError> {
        out.clear();
        let mut b = self.raw_labels;
        while let Some((field, wire)) = key(&mut b)? {
            match (field, wire) {
                (1, 2) => out.push(label(bytes(&mut b)?)?),
                // A sample sent between two labels (decoded already).
                (2, 2) => drop(bytes(&mut b)?),
                (f, w) => skip_unknown(&mut b, f, w, &[1, 2])?,
            }
        }
        Ok(())
    }
}

/// Why a body is not a `WriteRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad WriteRequest protobuf: {0}")]
pub(crate) struct DecodeError(&'static str);

impl From<DecodeError> for crate::error::ApiError {
    fn from(e: DecodeError) -> Self {
        crate::error::ApiError::invalid("body", e)
    }
}

fn varint(b: &mut &[u8]) -> Result<u64, DecodeError> {
    // Most varints of a request (keys, label lengths) are one byte.
    if let Some((&byte, rest)) = b.split_first()
        && byte < 0x80
    {
        *b = rest;
        return Ok(u64::from(byte));
    }
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or(DecodeError("truncated varint"))?;
        *b = rest;
        // The tenth byte holds the 64th bit only.
        if i == 9 && byte > 1 {
            return Err(DecodeError("varint overflows 64 bits"));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint longer than 10 bytes"))
}

fn bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let n = usize::try_from(varint(b)?).map_err(|_| DecodeError("length too large"))?;
    let (head, rest) = b.split_at_checked(n).ok_or(DecodeError("truncated length-delimited field"))?;
    *b = rest;
    Ok(head)
}

fn fixed<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let (head, rest) = b.split_first_chunk::<N>().ok_or(DecodeError("truncated fixed-width field"))?;
    *b = rest;
    Ok(*head)
}

/// The next (field number, wire type), or `None` at the end.
fn key(b: &mut &[u8]) -> Result<Option<(u64, u8)>, DecodeError> {
    if b.is_empty() {
        return Ok(None);
    }
    let k = varint(b)?;
    let field = k >> 3;
    if field == 0 || field > u64::from(u32::MAX >> 3) {
        return Err(DecodeError("invalid field number"));
    }
    Ok(Some((field, (k & 7) as u8)))
}

/// Skips an unknown field; a known one with another wire type is an error
/// (prost refuses it too: skipping would silently change the series).
fn skip_unknown(b: &mut &[u8], field: u64, wire: u8, known: &[u64]) -> Result<(), DecodeError> {
    if known.contains(&field) {
        return Err(DecodeError("a field has the wrong wire type"));
    }
    skip(b, wire)
}

fn skip(b: &mut &[u8], wire: u8) -> Result<(), DecodeError> {
    match wire {
        0 => varint(b).map(|_| ()),
        1 => fixed::<8>(b).map(|_| ()),
        2 => bytes(b).map(|_| ()),
        5 => fixed::<4>(b).map(|_| ()),
        _ => Err(DecodeError("unsupported wire type")),
    }
}

fn string<'a>(b: &mut &'a [u8]) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes(b)?).map_err(|_| DecodeError("a label is not UTF-8"))
}

fn label(mut b: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (mut name, mut value) = ("", "");
    while let Some((field, wire)) = key(&mut b)? {
        match (field, wire) {
            (1, 2) => name = string(&mut b)?,
            (2, 2) => value = string(&mut b)?,
            (f, w) => skip_unknown(&mut b, f, w, &[1, 2])?,
        }
    }
    Ok((name, value))
}

fn sample(mut b: &[u8]) -> Result<(f64, i64), DecodeError> {
    // As Prometheus and prost write a sample: the value, then the
    // timestamp, nothing else. Anything else takes the general path.
    if let [0x09, v @ ..] = b
        && let Some((value, mut rest)) = v.split_first_chunk::<8>()
        && let Some((&0x10, after)) = rest.split_first()
    {
        rest = after;
        if let Ok(ts) = varint(&mut rest)
            && rest.is_empty()
        {
            return Ok((f64::from_le_bytes(*value), ts as i64));
        }
    }
    let (mut value, mut ts) = (0.0, 0);
    while let Some((field, wire)) = key(&mut b)? {
        match (field, wire) {
            (1, 1) => value = f64::from_le_bytes(fixed::<8>(&mut b)?),
            (2, 0) => ts = varint(&mut b)? as i64,
            (f, w) => skip_unknown(&mut b, f, w, &[1, 2])?,
        }
    }
    Ok((value, ts))
}

fn series<'a>(body: &'a [u8], out: &mut Series<'a>) -> Result<(), DecodeError> {
    out.samples.clear();
    let mut b = body;
    // The span of the label fields: parsed only by callers that need them.
    let mut span: Option<(usize, usize)> = None;
    loop {
        let start = body.len() - b.len();
        // Label fields with a one-byte length, back to back (nearly all):
        // skipped by offset in a tight loop, without the general key and
        // length decoding.
        let mut end = start;
        while let (Some(0x0a), Some(&len)) = (body.get(end), body.get(end + 1))
            && len < 0x80
            && end + 2 + usize::from(len) <= body.len()
        {
            end += 2 + usize::from(len);
        }
        if end > start {
            b = &body[end..];
            span = Some((span.map_or(start, |s| s.0), end));
            continue;
        }
        let Some((field, wire)) = key(&mut b)? else { break };
        match (field, wire) {
            (1, 2) => {
                bytes(&mut b)?;
                span = Some((span.map_or(start, |s| s.0), body.len() - b.len()));
            }
            (2, 2) => out.samples.push(sample(bytes(&mut b)?)?),
            (f, w) => skip_unknown(&mut b, f, w, &[1, 2])?,
        }
    }
    out.raw_labels = span.map_or(&[][..], |(s, e)| &body[s..e]);
    Ok(())
}

/// Calls `f` with each time series of the `WriteRequest` in `body`, in order
/// (one reused [`Series`]: nothing is allocated per series once it has grown).
pub(crate) fn for_each_series<'a, E: From<DecodeError>>(
    mut body: &'a [u8],
    mut f: impl FnMut(&Series<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut s = Series::default();
    while let Some((field, wire)) = key(&mut body)? {
        match (field, wire) {
            (1, 2) => {
                series(bytes(&mut body)?, &mut s)?;
                f(&s)?;
            }
            // Metadata: not stored.
            (3, 2) => skip(&mut body, 2)?,
            (f, w) => skip_unknown(&mut body, f, w, &[1, 3])?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api::prometheus as pb;
    use prost::Message;
    use rand::{Rng, SeedableRng};

    /// A series as owned labels and samples.
    type Owned = (Vec<(String, String)>, Vec<(f64, i64)>);

    fn decode_all(body: &[u8]) -> Result<Vec<Owned>, DecodeError> {
        let mut out = Vec::new();
        let mut labels = Vec::new();
        for_each_series(body, |s| {
            s.labels(&mut labels)?;
            out.push((labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), s.samples.clone()));
            Ok::<_, DecodeError>(())
        })?;
        Ok(out)
    }

    fn via_prost(req: &pb::WriteRequest) -> Vec<Owned> {
        req.timeseries
            .iter()
            .map(|t| {
                (
                    t.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                    t.samples.iter().map(|s| (s.value, s.timestamp)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn decodes_what_prost_encodes_including_negative_times_and_odd_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..200 {
            let timeseries = (0..rng.random_range(0..6))
                .map(|i| pb::TimeSeries {
                    labels: (0..rng.random_range(0..5))
                        .map(|j| pb::Label { name: format!("l{j}"), value: if j == 2 { String::new() } else { format!("v{i}é{round}") } })
                        .collect(),
                    samples: (0..rng.random_range(0..4))
                        .map(|k| pb::Sample {
                            value: [f64::NAN, -0.0, 1.5, f64::INFINITY][k % 4],
                            timestamp: rng.random_range(-5_000_000_000_000i64..5_000_000_000_000),
                        })
                        .collect(),
                })
                .collect();
            let req = pb::WriteRequest { timeseries, metadata: vec![] };
            let body = req.encode_to_vec();
            let got = decode_all(&body).unwrap();
            // The reference: what prost decodes from the same bytes (prost
            // does not encode a -0.0 value, for one).
            let want = via_prost(&pb::WriteRequest::decode(body.as_slice()).unwrap());
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0);
                let bits = |v: &[(f64, i64)]| v.iter().map(|(f, t)| (f.to_bits(), *t)).collect::<Vec<_>>();
                assert_eq!(bits(&g.1), bits(&w.1), "round {round}");
            }
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_damage_is_an_error_never_a_panic() {
        // Metadata (field 3) and an unknown varint field (9) around one series.
        let mut body = pb::WriteRequest {
            timeseries: vec![pb::TimeSeries { labels: vec![pb::Label { name: "a".into(), value: "b".into() }], samples: vec![] }],
            metadata: vec![pb::MetricMetadata { metric_family_name: "m".into(), ..Default::default() }],
        }
        .encode_to_vec();
        body.extend_from_slice(&[9 << 3, 42]);
        assert_eq!(decode_all(&body).unwrap(), vec![(vec![("a".into(), "b".into())], vec![])]);
        // Every truncation and every single-byte change: an error or a decode, never a panic.
        for cut in 0..body.len() {
            let _ = decode_all(&body[..cut]);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..2000 {
            let mut b = body.clone();
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
            let _ = decode_all(&b);
        }
        assert_eq!(decode_all(&[0x0a, 0x05, 0x0a]), Err(DecodeError("truncated length-delimited field")));
        assert_eq!(decode_all(&[0x0b]), Err(DecodeError("a field has the wrong wire type")));
        assert_eq!(decode_all(&[0x4b]), Err(DecodeError("unsupported wire type")), "field 9 as a group");
        assert!(decode_all(&[0x0a, 0x04, 0x0a, 0x02, 0x0a, 0xff]).is_err(), "a label that is not UTF-8");
        // A label name sent as a varint (prost refuses it; skipping it would change the series).
        assert_eq!(decode_all(&[0x0a, 0x04, 0x0a, 0x02, 0x08, 0x01]), Err(DecodeError("a field has the wrong wire type")));
        assert_eq!(decode_all(&[0x00, 0x00]), Err(DecodeError("invalid field number")));
        let overlong = [0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(decode_all(&overlong), Err(DecodeError("varint overflows 64 bits")));
    }

    /// Damaged remote-write bodies (and length fields set to extremes) are
    /// refused without a panic or an allocation out of proportion.
    #[test]
    fn damaged_bodies_are_refused_without_outsized_allocation() {
        let series = |name: &str, n: i64| pb::TimeSeries {
            labels: vec![
                pb::Label { name: "__name__".into(), value: name.into() },
                pb::Label { name: "instance".into(), value: "10.0.0.1:9100".into() },
            ],
            samples: (0..n).map(|i| pb::Sample { value: i as f64 * 0.5, timestamp: 1_700_000_000_000 + i }).collect(),
        };
        let valid = vec![
            pb::WriteRequest { timeseries: vec![series("up", 3), series("node_cpu_seconds_total", 20)], metadata: vec![] }.encode_to_vec(),
            pb::WriteRequest { timeseries: vec![series("x", 1)], metadata: vec![] }.encode_to_vec(),
        ];
        canopy_model::testing::fuzz_decoder("remote write", &valid, 20_000, decode_all);
    }
}
