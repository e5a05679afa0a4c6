//! Column encodings inside a part block (one series of one measure). They
//! remove the regularity of time series before zstd sees the bytes:
//! timestamps as delta-of-delta, integers as deltas, floats as XOR with the
//! previous value with bytes transposed, tags and other values run-length
//! encoded (so a series' constant tags are stored once per block).

use std::borrow::Cow;

use canopy_model::codec::{put_bytes, put_varint, take_bytes, take_len, take_varint, unzigzag, zigzag};
use canopy_model::{FieldVal, TagVal, Tags};

use super::block::{FieldColumn, TagColumn};
use super::raw_bits::BitWriter;
use super::walk;

/// Encodes sorted timestamps as formats 1 and 2 did: first value, first
/// delta, then delta-of-deltas, as varints. (Parts of those formats are
/// still read; only the decoder tests still write them.)
#[cfg(test)]
pub(crate) fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) {
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, &t) in ts.iter().enumerate() {
        match i {
            0 => put_varint(out, zigzag(t)),
            _ => {
                let delta = t.wrapping_sub(prev);
                put_varint(out, zigzag(delta.wrapping_sub(prev_delta)));
                prev_delta = delta;
            }
        }
        prev = t;
    }
}

/// Decodes `n` timestamps written by [`encode_timestamps`].
pub(crate) fn decode_timestamps(mut buf: &[u8], n: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    let mut first = true;
    take_varints(&mut buf, n, |z| {
        let v = unzigzag(z);
        let t = if first {
            first = false;
            v
        } else {
            prev_delta = prev_delta.wrapping_add(v);
            prev.wrapping_add(prev_delta)
        };
        out.push(t);
        prev = t;
    })?;
    Some(out)
}

/// Reads `n` varints, handing each to `f`. Columns are mostly one-byte
/// varints (regular timestamps, equal versions) or two-byte ones (small
/// deltas): eight one-byte varints are taken at once when a word shows no
/// continuation bit, and two-byte ones without the general loop.
#[inline]
fn take_varints(buf: &mut &[u8], n: usize, mut f: impl FnMut(u64)) -> Option<()> {
    let bytes = *buf;
    let mut i = 0;
    let mut left = n;
    while left > 0 {
        if left >= 8 && i + 8 <= bytes.len() {
            let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            if word & 0x8080_8080_8080_8080 == 0 {
                bytes[i..i + 8].iter().for_each(|&b| f(b as u64));
                i += 8;
                left -= 8;
                continue;
            }
        }
        let b0 = *bytes.get(i)?;
        i += 1;
        left -= 1;
        if b0 < 0x80 {
            f(b0 as u64);
            continue;
        }
        let b1 = *bytes.get(i)?;
        i += 1;
        let mut v = (b0 & 0x7f) as u64 | ((b1 & 0x7f) as u64) << 7;
        if b1 < 0x80 {
            f(v);
            continue;
        }
        let mut shift = 14;
        loop {
            let b = *bytes.get(i)?;
            i += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        f(v);
    }
    *buf = &bytes[i..];
    Some(())
}

/// Encodes integers as formats 1 and 2 did: zigzag deltas as varints.
#[cfg(test)]
pub(crate) fn encode_ints(vals: &[i64], out: &mut Vec<u8>) {
    let mut prev = 0i64;
    for &v in vals {
        put_varint(out, zigzag(v.wrapping_sub(prev)));
        prev = v;
    }
}

pub(crate) fn decode_ints(buf: &mut &[u8], n: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    let mut prev = 0i64;
    take_varints(buf, n, |z| {
        prev = prev.wrapping_add(unzigzag(z));
        out.push(prev);
    })?;
    Some(out)
}

/// Values per frame of a bit-packed sequence.
const FRAME: usize = 128;

/// Bit-packs zigzagged values in frames of [`FRAME`] (see [`pack_frame`]).
fn pack(vals: &[u64], out: &mut Vec<u8>) {
    vals.chunks(FRAME).for_each(|frame| pack_frame(frame, out));
}

/// Bit-packs at most [`FRAME`] zigzagged values: a width byte `w`, then the
/// values in `w` bits each, least significant bit first. A frame costs what
/// its largest value needs, and decodes without a branch per value (unlike
/// varints, whose mixed one- and two-byte lengths kept decoding at ~6 ns a
/// value).
fn pack_frame(frame: &[u64], out: &mut Vec<u8>) {
    let w = 64 - frame.iter().fold(0, |a, &v| a | v).leading_zeros();
    out.push(w as u8);
    let mut bits = BitWriter::new(out);
    frame.iter().for_each(|&v| bits.put(v, w));
    bits.finish();
}

/// Skips one frame of `len` values written by [`pack_frame`].
fn skip_frame(buf: &mut &[u8], len: usize) -> Option<()> {
    let (&w, rest) = buf.split_first()?;
    let bytes = (len * w as usize).div_ceil(8);
    if w > 64 || rest.len() < bytes {
        return None;
    }
    *buf = &rest[bytes..];
    Some(())
}

/// Unpacks one frame of `dst.len()` values written by [`pack_frame`].
#[inline]
fn unpack_frame(buf: &mut &[u8], dst: &mut [u64]) -> Option<()> {
    let (&w, rest) = buf.split_first()?;
    let w = w as usize;
    let bytes = (dst.len() * w).div_ceil(8);
    if w > 64 || rest.len() < bytes {
        return None;
    }
    if w == 0 {
        dst.fill(0);
    } else if rest.len() >= bytes + 16 {
        unpack_bits(rest, w, dst);
    } else {
        // The column's last frame: word reads need padding past its end.
        let mut padded = [0u8; FRAME * 8 + 16];
        padded[..bytes].copy_from_slice(&rest[..bytes]);
        unpack_bits(&padded, w, dst);
    }
    *buf = &rest[bytes..];
    Some(())
}

/// Reads `dst.len()` values of `w` bits (1..=64); `src` holds at least 16
/// bytes past the last value's first byte.
#[inline]
fn unpack_bits(src: &[u8], w: usize, dst: &mut [u64]) {
    let mask = u64::MAX >> (64 - w);
    if w <= 56 {
        for (i, d) in dst.iter_mut().enumerate() {
            let bit = i * w;
            let word = u64::from_le_bytes(src[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
            *d = (word >> (bit % 8)) & mask;
        }
    } else {
        for (i, d) in dst.iter_mut().enumerate() {
            let bit = i * w;
            let word = u128::from_le_bytes(src[bit / 8..bit / 8 + 16].try_into().expect("16 bytes"));
            *d = (word >> (bit % 8)) as u64 & mask;
        }
    }
}

/// Encodes integers (format 3) in independent frames of [`FRAME`]: the
/// frame's first value as a zigzag varint, then the zigzag deltas of the
/// others bit-packed, so a reader decodes only the frames its time range
/// covers and skips the others by their width byte.
pub(crate) fn encode_packed_ints(vals: &[i64], out: &mut Vec<u8>) {
    let mut deltas = Vec::with_capacity(FRAME);
    for frame in vals.chunks(FRAME) {
        put_varint(out, zigzag(frame[0]));
        deltas.clear();
        deltas.extend(frame.windows(2).map(|w| zigzag(w[1].wrapping_sub(w[0]))));
        pack_frame(&deltas, out);
    }
}

/// Decodes values `[lo, hi)` of `n` integers written by
/// [`encode_packed_ints`], skipping the frames outside; `buf` ends past all `n`.
pub(crate) fn decode_packed_ints_range(buf: &mut &[u8], n: usize, lo: usize, hi: usize) -> Option<Vec<i64>> {
    debug_assert!(lo <= hi && hi <= n);
    let mut out = Vec::with_capacity(hi - lo);
    let mut deltas = [0u64; FRAME];
    for start in (0..n).step_by(FRAME) {
        let len = (n - start).min(FRAME);
        let first = unzigzag(take_varint(buf)?);
        if start + len <= lo || start >= hi {
            skip_frame(buf, len - 1)?;
            continue;
        }
        unpack_frame(buf, &mut deltas[..len - 1])?;
        // Rows [a, b) of this frame are wanted.
        let (a, b) = (lo.max(start) - start, hi.min(start + len) - start);
        // Prefix sums in place (the running value stays in a register),
        // then the wanted rows are copied out.
        let mut v = first;
        for d in &mut deltas[..b - 1] {
            v = v.wrapping_add(unzigzag(*d));
            *d = v as u64;
        }
        if a == 0 {
            out.push(first);
        }
        out.extend(deltas[a.saturating_sub(1)..b - 1].iter().map(|&x| x as i64));
    }
    Some(out)
}

/// Encodes sorted timestamps (format 3): the first and the first delta as
/// varints, then the delta-of-deltas bit-packed (a regular interval packs
/// to one width byte per frame).
pub(crate) fn encode_packed_timestamps(ts: &[i64], out: &mut Vec<u8>) {
    let Some(&first) = ts.first() else { return };
    put_varint(out, zigzag(first));
    if ts.len() < 2 {
        return;
    }
    let d1 = ts[1].wrapping_sub(ts[0]);
    put_varint(out, zigzag(d1));
    let dods: Vec<u64> = ts.windows(3).map(|w| zigzag(w[2].wrapping_sub(w[1]).wrapping_sub(w[1].wrapping_sub(w[0])))).collect();
    pack(&dods, out);
}

/// The most timestamps `len` bytes of a timestamp column can hold: a
/// varint takes a byte at least, a bit-packed frame of [`FRAME`] values a
/// byte at least (after the first two, which are varints).
pub(crate) fn values_at_most(len: usize, packed: bool) -> usize {
    if packed { len.saturating_mul(FRAME).saturating_add(2) } else { len }
}

/// Decodes `n` timestamps written by [`encode_packed_timestamps`].
pub(crate) fn decode_packed_timestamps(mut buf: &[u8], n: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Some(out);
    }
    let mut prev = unzigzag(take_varint(&mut buf)?);
    out.push(prev);
    if n == 1 {
        return Some(out);
    }
    let mut delta = unzigzag(take_varint(&mut buf)?);
    prev = prev.wrapping_add(delta);
    out.push(prev);
    let mut frame = [0u64; FRAME];
    let mut left = n - 2;
    while left > 0 {
        let len = left.min(FRAME);
        unpack_frame(&mut buf, &mut frame[..len])?;
        for z in &mut frame[..len] {
            delta = delta.wrapping_add(unzigzag(*z));
            prev = prev.wrapping_add(delta);
            *z = prev as u64;
        }
        out.extend(frame[..len].iter().map(|&t| t as i64));
        left -= len;
    }
    Some(out)
}

/// Run-length encodes values as (run length, value) pairs.
fn encode_runs<T: PartialEq>(vals: &[&T], out: &mut Vec<u8>, encode: impl Fn(&T, &mut Vec<u8>)) {
    let mut i = 0;
    while i < vals.len() {
        let mut j = i + 1;
        // Rows of a series share their tag values' allocation: the same
        // address is the same value, without comparing strings.
        while j < vals.len() && (std::ptr::eq(vals[j], vals[i]) || vals[j] == vals[i]) {
            j += 1;
        }
        put_varint(out, (j - i) as u64);
        encode(vals[i], out);
        i = j;
    }
}

/// Decodes `n` values written by [`encode_runs`]; a run past `n` is corruption.
fn decode_runs<T: Clone>(buf: &mut &[u8], n: usize, decode: impl Fn(&mut &[u8]) -> Option<T>) -> Option<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let run = take_varint(buf)? as usize;
        if run == 0 || run > n - out.len() {
            return None;
        }
        let v = decode(buf)?;
        out.extend(std::iter::repeat_n(v, run));
    }
    Some(out)
}

/// Run-length encodes tag values (per row; writers hand runs of tag sets
/// to [`encode_tag_set_runs`]).
#[cfg(test)]
pub(crate) fn encode_tag_runs(vals: &[&TagVal], out: &mut Vec<u8>) {
    encode_runs(vals, out, TagVal::encode);
}

/// Run-length encodes tag `t` of rows given as runs of tag sets (`(end,
/// tags)`, ends increasing): the bytes [`encode_tag_runs`] writes for the
/// rows' values, without a reference per row. Neighbouring runs of one
/// value (two sets that differ in another tag) make one run.
pub(crate) fn encode_tag_set_runs(runs: &[(u32, &Tags)], t: usize, out: &mut Vec<u8>) {
    let mut start = 0u32;
    let mut i = 0;
    while i < runs.len() {
        let v = &runs[i].1[t];
        let mut j = i + 1;
        while j < runs.len() && (std::sync::Arc::ptr_eq(runs[j].1, runs[i].1) || runs[j].1[t] == *v) {
            j += 1;
        }
        let end = runs[j - 1].0;
        put_varint(out, u64::from(end - start));
        v.encode(out);
        start = end;
        i = j;
    }
}

/// Decodes `n` tag values written by [`encode_tag_runs`] as runs, without
/// repeating a value per row.
pub(crate) fn decode_tag_column(buf: &mut &[u8], n: usize) -> Option<TagColumn> {
    let mut runs: Vec<(u32, TagVal)> = Vec::new();
    let mut at = 0usize;
    while at < n {
        let run = take_varint(buf)? as usize;
        if run == 0 || run > n - at {
            return None;
        }
        at += run;
        runs.push((at as u32, TagVal::decode(buf)?));
    }
    Some(TagColumn { runs })
}

const FIELDS_NULL: u8 = 0;
const FIELDS_INT: u8 = 1;
const FIELDS_FLOAT_AS_INT: u8 = 2;
const FIELDS_FLOAT_XOR: u8 = 3;
const FIELDS_RUNS: u8 = 4;
const FIELDS_FLOAT_DECIMAL: u8 = 5;
/// Flag on the integer kinds (int, float as int, decimal): the integers are
/// bit-packed ([`encode_packed_ints`], format 3) rather than varints.
const FIELDS_PACKED: u8 = 0x10;
/// Flag on the integer kinds: the integers are walk-coded ([`walk`], format 9).
const FIELDS_WALK: u8 = 0x20;
/// Fewest integers walk coding is tried on: below, its header (~40 bytes
/// for a gauge) does not pay.
const WALK_MIN_VALUES: usize = 32;

/// How a column's integers are laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IntLayout {
    /// Zigzag delta varints (formats 1–2).
    Varints,
    /// Bit-packed frames ([`encode_packed_ints`], format 3).
    Packed,
    /// Walk-coded ([`walk`], format 9).
    Walk,
}

/// A field column's kind byte as (kind, layout); `None` if a layout flag
/// is on a kind without integers, or both are set.
fn split_kind(kind: u8) -> Option<(u8, IntLayout)> {
    let base = kind & !(FIELDS_PACKED | FIELDS_WALK);
    let layout = match kind & (FIELDS_PACKED | FIELDS_WALK) {
        0 => return Some((base, IntLayout::Varints)),
        FIELDS_PACKED => IntLayout::Packed,
        FIELDS_WALK => IntLayout::Walk,
        _ => return None,
    };
    matches!(base, FIELDS_INT | FIELDS_FLOAT_AS_INT | FIELDS_FLOAT_DECIMAL).then_some((base, layout))
}

/// Reads values `[lo, hi)` of `n` integers, bit-packed (format 3: frames
/// outside are skipped) or varints (formats 1–2: read whole, then cut);
/// `buf` ends past all `n`.
pub(crate) fn decode_ints_range(buf: &mut &[u8], n: usize, packed: bool, lo: usize, hi: usize) -> Option<Vec<i64>> {
    decode_laid_out_ints(buf, n, if packed { IntLayout::Packed } else { IntLayout::Varints }, lo, hi)
}

/// Reads values `[lo, hi)` of `n` integers laid out as `layout`; `buf`
/// ends past all `n`.
fn decode_laid_out_ints(buf: &mut &[u8], n: usize, layout: IntLayout, lo: usize, hi: usize) -> Option<Vec<i64>> {
    match layout {
        IntLayout::Varints => decode_ints(buf, n).map(|v| keep_rows(v, lo, hi)),
        IntLayout::Packed => decode_packed_ints_range(buf, n, lo, hi),
        IntLayout::Walk => walk::decode_range(buf, n, lo, hi),
    }
}

/// Rows `[lo, hi)` of a decoded column.
fn keep_rows<T>(mut v: Vec<T>, lo: usize, hi: usize) -> Vec<T> {
    v.truncate(hi);
    v.drain(..lo);
    v
}

/// Most decimal places tried when looking for an exact decimal form: nine
/// catches Go's durations in seconds (`Duration.Seconds()`, nanoseconds /
/// 1e9), which real agents export by the hundred and which otherwise fall
/// to the XOR encoding at ~3.6 bytes a sample. Formats 1-4 wrote at most 6.
const DECIMAL_PLACES_MAX: u32 = 9;

/// The fewest decimal places `k` such that every value is exactly
/// `m / 10^k` for an integer `m` below 2^53 — true of most gauges, which are
/// printed and parsed as short decimals. Bit-exact: the check uses the same
/// division the decoder does.
fn decimal_places(vals: &[f64]) -> Option<(u32, Vec<i64>)> {
    'k: for k in 1..=DECIMAL_PLACES_MAX {
        let scale = 10f64.powi(k as i32);
        let mut ms = Vec::with_capacity(vals.len());
        for &v in vals {
            let m = (v * scale).round();
            // Compare through i64, as the decoder sees it (this also rejects -0.0).
            if m.is_nan() || m.abs() >= EXACT_INT_FLOAT || ((m as i64) as f64 / scale).to_bits() != v.to_bits() {
                continue 'k;
            }
            ms.push(m as i64);
        }
        return Some((k, ms));
    }
    None
}

/// Largest magnitude at which every integer is exactly a float.
const EXACT_INT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// Encodes one field column, picking the tightest encoding that is exact.
pub(crate) fn encode_field_column(vals: &[&FieldVal], out: &mut Vec<u8>) {
    let present: Vec<bool> = vals.iter().map(|v| !matches!(v, FieldVal::Null)).collect();
    if !present.iter().any(|&p| p) {
        out.push(FIELDS_NULL);
        return;
    }
    let ints: Option<Vec<i64>> = vals
        .iter()
        .filter(|v| !matches!(v, FieldVal::Null))
        .map(|v| match v {
            FieldVal::Int(i) => Some(*i),
            _ => None,
        })
        .collect();
    let floats: Option<Vec<f64>> = vals
        .iter()
        .filter(|v| !matches!(v, FieldVal::Null))
        .map(|v| match v {
            FieldVal::Float(f) => Some(*f),
            _ => None,
        })
        .collect();
    if let Some(ints) = ints {
        encode_present_ints(&present, &ints, out);
    } else if let Some(floats) = floats {
        encode_present_floats(&present, &floats, out);
    } else {
        out.push(FIELDS_RUNS);
        encode_runs(vals, out, FieldVal::encode);
    }
}

/// Encodes a typed column as [`encode_field_column`] encodes its values
/// (the same bytes), reading numbers from their slice.
pub(crate) fn encode_typed_field_column(col: &FieldColumn, out: &mut Vec<u8>) {
    /// The present rows' numbers through `encode`, or the null kind when no
    /// row is present.
    fn numbers<T: Copy>(vals: &[T], present: &Option<Vec<bool>>, out: &mut Vec<u8>, encode: fn(&[bool], &[T], &mut Vec<u8>)) {
        let (present, kept): (Cow<'_, [bool]>, Cow<'_, [T]>) = match present {
            None => (Cow::Owned(vec![true; vals.len()]), Cow::Borrowed(vals)),
            Some(p) => (Cow::Borrowed(p), Cow::Owned(vals.iter().zip(p).filter(|(_, p)| **p).map(|(v, _)| *v).collect())),
        };
        if kept.is_empty() {
            out.push(FIELDS_NULL);
        } else {
            encode(&present, &kept, out);
        }
    }
    match col {
        FieldColumn::Null => out.push(FIELDS_NULL),
        FieldColumn::Values(vals) => encode_field_column(&vals.iter().collect::<Vec<_>>(), out),
        FieldColumn::Float { vals, present } => numbers(vals, present, out, encode_present_floats),
        FieldColumn::Int { vals, present } => numbers(vals, present, out, encode_present_ints),
    }
}

/// Integers of the rows `present` marks (at least one).
fn encode_present_ints(present: &[bool], ints: &[i64], out: &mut Vec<u8>) {
    put_int_column(FIELDS_INT, present, None, ints, out);
}

/// A column of integers: the kind byte with its layout flag, presence, the
/// decimal places if any, then the integers bit-packed or walk-coded,
/// whichever is smaller.
fn put_int_column(kind: u8, present: &[bool], places: Option<u8>, ints: &[i64], out: &mut Vec<u8>) {
    let mut packed = Vec::new();
    encode_packed_ints(ints, &mut packed);
    let walked = (ints.len() >= WALK_MIN_VALUES).then(|| walk::encode(ints, packed.len())).flatten().filter(|w| w.len() < packed.len());
    out.push(kind | if walked.is_some() { FIELDS_WALK } else { FIELDS_PACKED });
    put_presence(present, out);
    out.extend(places);
    out.extend_from_slice(walked.as_deref().unwrap_or(&packed));
}

/// Floats of the rows `present` marks (at least one): as integers when all
/// are whole, as scaled integers when all have few decimal places, else XOR.
fn encode_present_floats(present: &[bool], floats: &[f64], out: &mut Vec<u8>) {
    let integral = floats.iter().all(|f| f.fract() == 0.0 && f.abs() < EXACT_INT_FLOAT && !(*f == 0.0 && f.is_sign_negative()));
    if integral {
        put_int_column(FIELDS_FLOAT_AS_INT, present, None, &floats.iter().map(|f| *f as i64).collect::<Vec<_>>(), out);
    } else if let Some((k, ms)) = decimal_places(floats) {
        put_int_column(FIELDS_FLOAT_DECIMAL, present, Some(k as u8), &ms, out);
    } else {
        out.push(FIELDS_FLOAT_XOR);
        put_presence(present, out);
        encode_float_xor(floats, out);
    }
}

/// Decodes `n` values of a column written by [`encode_field_column`].
pub(crate) fn decode_field_column(buf: &mut &[u8], n: usize) -> Option<Vec<FieldVal>> {
    let (&kind, rest) = buf.split_first()?;
    *buf = rest;
    let (kind, layout) = split_kind(kind)?;
    match kind {
        FIELDS_NULL => Some(vec![FieldVal::Null; n]),
        FIELDS_INT | FIELDS_FLOAT_AS_INT | FIELDS_FLOAT_XOR | FIELDS_FLOAT_DECIMAL => {
            let present = take_presence(buf, n)?;
            let k = present.iter().filter(|&&p| p).count();
            let mut vals: Box<dyn Iterator<Item = FieldVal>> = match kind {
                FIELDS_INT => Box::new(decode_laid_out_ints(buf, k, layout, 0, k)?.into_iter().map(FieldVal::Int)),
                FIELDS_FLOAT_AS_INT => Box::new(decode_laid_out_ints(buf, k, layout, 0, k)?.into_iter().map(|i| FieldVal::Float(i as f64))),
                FIELDS_FLOAT_DECIMAL => {
                    let (&places, rest) = buf.split_first()?;
                    *buf = rest;
                    if places as u32 > DECIMAL_PLACES_MAX {
                        return None;
                    }
                    let scale = 10f64.powi(places as i32);
                    Box::new(decode_laid_out_ints(buf, k, layout, 0, k)?.into_iter().map(move |m| FieldVal::Float(m as f64 / scale)))
                }
                _ => Box::new(decode_float_xor(buf, k)?.into_iter().map(FieldVal::Float)),
            };
            present.iter().map(|&p| if p { vals.next() } else { Some(FieldVal::Null) }).collect()
        }
        FIELDS_RUNS => decode_runs(buf, n, FieldVal::decode),
        _ => None,
    }
}

/// Decodes rows `[lo, hi)` of a column of `n` values written by
/// [`encode_field_column`] into typed vectors, the form queries aggregate
/// over. Bit-packed integers outside the rows are skipped, not decoded.
pub(crate) fn decode_field_typed(buf: &mut &[u8], n: usize, lo: usize, hi: usize) -> Option<FieldColumn> {
    debug_assert!(lo <= hi && hi <= n);
    let (&kind, rest) = buf.split_first()?;
    let (kind, layout) = split_kind(kind)?;
    match kind {
        FIELDS_NULL => {
            *buf = rest;
            Some(FieldColumn::Null)
        }
        FIELDS_INT | FIELDS_FLOAT_AS_INT | FIELDS_FLOAT_XOR | FIELDS_FLOAT_DECIMAL => {
            *buf = rest;
            let present = take_presence(buf, n)?;
            let k = present.iter().filter(|&&p| p).count();
            // Values are stored for present rows only: rows [lo, hi) hold values [a, b).
            let a = present[..lo].iter().filter(|&&p| p).count();
            let b = a + present[lo..hi].iter().filter(|&&p| p).count();
            let present = &present[lo..hi];
            let all = b - a == hi - lo;
            let ints = |buf: &mut &[u8]| decode_laid_out_ints(buf, k, layout, a, b);
            // Null rows hold 0 in the dense vector; the mask says which.
            fn spread<T: Copy + Default>(vals: Vec<T>, present: &[bool]) -> Vec<T> {
                let mut it = vals.into_iter();
                present.iter().map(|&p| if p { it.next().unwrap_or_default() } else { T::default() }).collect()
            }
            let mask = (!all).then(|| present.to_vec());
            match kind {
                FIELDS_INT => {
                    let v = ints(buf)?;
                    Some(FieldColumn::Int { vals: if all { v } else { spread(v, present) }, present: mask })
                }
                _ => {
                    let v: Vec<f64> = match kind {
                        FIELDS_FLOAT_AS_INT => ints(buf)?.into_iter().map(|i| i as f64).collect(),
                        FIELDS_FLOAT_DECIMAL => {
                            let (&places, rest) = buf.split_first()?;
                            *buf = rest;
                            if places as u32 > DECIMAL_PLACES_MAX {
                                return None;
                            }
                            let scale = 10f64.powi(places as i32);
                            ints(buf)?.into_iter().map(|m| m as f64 / scale).collect()
                        }
                        _ => keep_rows(decode_float_xor(buf, k)?, a, b),
                    };
                    Some(FieldColumn::Float { vals: if all { v } else { spread(v, present) }, present: mask })
                }
            }
        }
        _ => Some(FieldColumn::from_values(keep_rows(decode_field_column(buf, n)?, lo, hi))),
    }
}

/// Presence: a 0 byte when all values are present, else 1 and a bitmap.
fn put_presence(present: &[bool], out: &mut Vec<u8>) {
    if present.iter().all(|&p| p) {
        out.push(0);
        return;
    }
    out.push(1);
    let mut bitmap = vec![0u8; present.len().div_ceil(8)];
    for (i, &p) in present.iter().enumerate() {
        if p {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    put_bytes(out, &bitmap);
}

fn take_presence(buf: &mut &[u8], n: usize) -> Option<Vec<bool>> {
    let (&flag, rest) = buf.split_first()?;
    *buf = rest;
    match flag {
        0 => Some(vec![true; n]),
        1 => {
            let bitmap = take_bytes(buf)?;
            (bitmap.len() == n.div_ceil(8)).then(|| (0..n).map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0).collect())
        }
        _ => None,
    }
}

/// XOR with the previous value, then bytes transposed (all first bytes, all
/// second bytes, ...): slowly changing floats give long zero runs for zstd.
fn encode_float_xor(vals: &[f64], out: &mut Vec<u8>) {
    let mut prev = 0u64;
    let xored: Vec<[u8; 8]> = vals
        .iter()
        .map(|f| {
            let bits = f.to_bits();
            let x = bits ^ prev;
            prev = bits;
            x.to_be_bytes()
        })
        .collect();
    put_varint(out, (vals.len() * 8) as u64);
    for b in 0..8 {
        out.extend(xored.iter().map(|x| x[b]));
    }
}

fn decode_float_xor(buf: &mut &[u8], n: usize) -> Option<Vec<f64>> {
    let len = take_len(buf)?;
    if len != n * 8 {
        return None;
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    let mut prev = 0u64;
    Some(
        (0..n)
            .map(|i| {
                let mut be = [0u8; 8];
                for (b, slot) in be.iter_mut().enumerate() {
                    *slot = bytes[b * n + i];
                }
                prev ^= u64::from_be_bytes(be);
                f64::from_bits(prev)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_timestamps_encode_to_about_a_byte_each_and_round_trip() {
        let ts: Vec<i64> = (0..1000).map(|i| 1_700_000_000_000_000_000 + i * 10_000_000_000).collect();
        let mut buf = Vec::new();
        encode_timestamps(&ts, &mut buf);
        assert!(buf.len() < 1020, "{}", buf.len());
        assert_eq!(decode_timestamps(&buf, ts.len()).unwrap(), ts);
        let odd = vec![i64::MIN, i64::MAX, 0, -5, 3];
        let mut buf = Vec::new();
        encode_timestamps(&odd, &mut buf);
        assert_eq!(decode_timestamps(&buf, odd.len()).unwrap(), odd);
        assert!(decode_timestamps(&buf[..buf.len() - 1], odd.len()).is_none(), "a cut varint is corrupt");
        let mut ints = Vec::new();
        encode_ints(&[0, 0, 300, -70_000, i64::MIN, 5], &mut ints);
        assert_eq!(decode_ints(&mut ints.as_slice(), 6).unwrap(), vec![0, 0, 300, -70_000, i64::MIN, 5]);
        assert!(decode_ints(&mut [0xffu8; 11].as_slice(), 1).is_none(), "a varint longer than 10 bytes is corrupt");
    }

    #[test]
    fn packed_sequences_round_trip_at_every_width_and_frame_boundary() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for n in [0usize, 1, 2, 3, 127, 128, 129, 130, 257, 1000] {
            for bits in [0u32, 1, 7, 8, 9, 31, 55, 56, 57, 63, 64] {
                let vals: Vec<i64> =
                    (0..n).map(|_| if bits == 0 { 42 } else { (next() >> (64 - bits)) as i64 ^ (next() as i64 & i64::MIN) }).collect();
                let mut buf = Vec::new();
                encode_packed_ints(&vals, &mut buf);
                let mut rest = buf.as_slice();
                assert_eq!(decode_packed_ints_range(&mut rest, n, 0, n).unwrap(), vals, "n {n}, {bits} bits");
                assert!(rest.is_empty());
                for (lo, hi) in [(0, n), (n / 3, n / 2), (n / 2, n), (n.saturating_sub(1), n), (0, 0), (n, n)] {
                    let mut rest = buf.as_slice();
                    let got = decode_packed_ints_range(&mut rest, n, lo, hi).unwrap();
                    assert_eq!(got, vals[lo..hi], "rows {lo}..{hi} of {n}, {bits} bits");
                    assert!(rest.is_empty(), "a range read ends past the column");
                }
                if n > 1 {
                    assert!(
                        decode_packed_ints_range(&mut &buf[..buf.len() - 1], n, 0, n).is_none(),
                        "a cut frame is corrupt (n {n}, {bits} bits)"
                    );
                }
                let mut ts = vals.clone();
                ts.sort_unstable();
                let mut buf = Vec::new();
                encode_packed_timestamps(&ts, &mut buf);
                assert_eq!(decode_packed_timestamps(&buf, n).unwrap(), ts, "timestamps: n {n}, {bits} bits");
            }
        }
        // A regular interval costs a width byte per 128 timestamps.
        let ts: Vec<i64> = (0..8640).map(|i| 1_700_000_000_000_000_000 + i * 10_000_000_000).collect();
        let mut buf = Vec::new();
        encode_packed_timestamps(&ts, &mut buf);
        assert!(buf.len() < 9 + 9 + 68, "{} bytes", buf.len());
        assert_eq!(decode_packed_timestamps(&buf, ts.len()).unwrap(), ts);
        assert!(decode_packed_ints_range(&mut [0u8, 65, 0, 0].as_slice(), 2, 0, 2).is_none(), "a width over 64 bits is corrupt");
    }

    #[test]
    fn field_columns_round_trip_in_every_encoding() {
        let cols: Vec<Vec<FieldVal>> = vec![
            vec![FieldVal::Null, FieldVal::Null],
            vec![FieldVal::Int(5), FieldVal::Null, FieldVal::Int(-9), FieldVal::Int(i64::MAX)],
            vec![FieldVal::Float(1.0), FieldVal::Float(3.0), FieldVal::Null],
            vec![FieldVal::Float(0.1), FieldVal::Float(f64::NAN), FieldVal::Float(-0.0), FieldVal::Float(1e300)],
            vec![FieldVal::Float(12.34), FieldVal::Float(-0.05), FieldVal::Null, FieldVal::Float(99.99)],
            vec![FieldVal::Float(12.5), FieldVal::Float(-0.0)],
            vec![FieldVal::Float(0.1 + 0.2), FieldVal::Float(1.5)],
            vec![FieldVal::Str("a".into()), FieldVal::Str("a".into()), FieldVal::Null, FieldVal::Binary(vec![1])],
        ];
        for col in cols {
            let refs: Vec<&FieldVal> = col.iter().collect();
            let mut buf = Vec::new();
            encode_field_column(&refs, &mut buf);
            let mut rest = buf.as_slice();
            let back = decode_field_column(&mut rest, col.len()).unwrap();
            assert!(rest.is_empty());
            let mut rest = buf.as_slice();
            let typed = decode_field_typed(&mut rest, col.len(), 0, col.len()).unwrap();
            assert!(rest.is_empty());
            let typed: Vec<FieldVal> = (0..col.len()).map(|i| typed.get(i)).collect();
            assert_eq!(format!("{typed:?}"), format!("{back:?}"), "typed and per-row decoding agree");
            for (lo, hi) in [(1, col.len()), (1, 2), (2, col.len() - 1), (0, 1)].into_iter().filter(|&(lo, hi)| lo <= hi && hi <= col.len())
            {
                let part = decode_field_typed(&mut buf.as_slice(), col.len(), lo, hi).unwrap();
                let part: Vec<FieldVal> = (0..hi - lo).map(|i| part.get(i)).collect();
                assert_eq!(format!("{part:?}"), format!("{:?}", &back[lo..hi]), "rows {lo}..{hi} of {col:?}");
            }
            for (a, b) in col.iter().zip(&back) {
                match (a, b) {
                    (FieldVal::Float(x), FieldVal::Float(y)) => {
                        assert_eq!(x.to_bits(), y.to_bits())
                    }
                    _ => assert_eq!(a, b),
                }
            }
        }
    }

    #[test]
    fn short_decimals_use_the_decimal_encoding() {
        let col: Vec<FieldVal> = (0..1000).map(|i| FieldVal::Float(50.0 + (i % 7) as f64 * 0.25 - 0.01)).collect();
        let refs: Vec<&FieldVal> = col.iter().collect();
        let mut buf = Vec::new();
        encode_field_column(&refs, &mut buf);
        assert_eq!(split_kind(buf[0]).unwrap().0, FIELDS_FLOAT_DECIMAL);
        assert!(buf.len() < 2 * col.len() + 8, "{} bytes", buf.len());
        assert_eq!(decode_field_column(&mut buf.as_slice(), col.len()).unwrap(), col);
        // Go durations in seconds: nanoseconds / 1e9, nine places.
        let durations: Vec<FieldVal> =
            [123_456_789u64, 1_000_000_001, 42, 7_654_321].iter().cycle().take(500).map(|ns| FieldVal::Float(*ns as f64 / 1e9)).collect();
        let mut buf = Vec::new();
        encode_field_column(&durations.iter().collect::<Vec<_>>(), &mut buf);
        assert_eq!(split_kind(buf[0]).unwrap().0, FIELDS_FLOAT_DECIMAL);
        assert_eq!(buf[2], 9, "nine places");
        assert_eq!(decode_field_column(&mut buf.as_slice(), durations.len()).unwrap(), durations);
        // 0.1 + 0.2 has no short exact decimal form: it must not be rounded.
        let odd = [FieldVal::Float(0.1 + 0.2)];
        let mut buf = Vec::new();
        encode_field_column(&odd.iter().collect::<Vec<_>>(), &mut buf);
        assert_eq!(buf[0], FIELDS_FLOAT_XOR);
    }

    #[test]
    fn constant_tags_are_one_run() {
        let v = TagVal::Str("host-1".into());
        let vals = vec![&v; 500];
        let mut buf = Vec::new();
        encode_tag_runs(&vals, &mut buf);
        assert!(buf.len() < 12);
        assert_eq!(decode_tag_column(&mut buf.as_slice(), 500).unwrap(), TagColumn::constant(v, 500));
        assert!(decode_tag_column(&mut buf.as_slice(), 499).is_none(), "a run longer than the block is corrupt");
    }

    /// Each column decoder, given damaged or random bytes and a row count
    /// (from the input: a corrupt block's count is no more trustworthy than
    /// its bytes), refuses without panicking or reserving memory out of
    /// proportion to the input.
    #[test]
    fn column_decoders_survive_damaged_input() {
        use canopy_model::testing::{allocation_bound, fuzz_decoder_within};
        // Input: 3 bytes of row count, then the column.
        let framed = |n: usize, col: Vec<u8>| [(n as u32).to_le_bytes()[..3].to_vec(), col].concat();
        let split = |b: &[u8]| -> (usize, Vec<u8>) {
            let n = b.iter().take(3).enumerate().fold(0usize, |n, (i, &x)| n | (x as usize) << (8 * i));
            (n, b.get(3..).unwrap_or_default().to_vec())
        };
        // Up to 64 bytes per row the caller asked for, and the usual bound
        // for what the bytes themselves claim.
        let bound = |b: &[u8]| allocation_bound(b.len()) + 64 * split(b).0;
        let fuzz_decoder =
            |name: &str, valid: &[Vec<u8>], cases: usize, decode: &dyn Fn(&[u8])| fuzz_decoder_within(name, valid, cases, bound, decode);
        let ts: Vec<i64> = (0..300).map(|i| 1_700_000_000_000_000_000 + i * 10_000_000_000 + (i % 7)).collect();
        let ints: Vec<i64> = (0..300).map(|i| (i * i) % 1000 - 500).collect();
        let (mut t, mut pt, mut iv, mut pi) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        encode_timestamps(&ts, &mut t);
        encode_packed_timestamps(&ts, &mut pt);
        encode_ints(&ints, &mut iv);
        encode_packed_ints(&ints, &mut pi);
        fuzz_decoder("timestamps", &[framed(300, t)], 5000, &|b| {
            let (n, col) = split(b);
            drop(decode_timestamps(&col, n));
        });
        fuzz_decoder("packed timestamps", &[framed(300, pt)], 5000, &|b| {
            let (n, col) = split(b);
            drop(decode_packed_timestamps(&col, n));
        });
        fuzz_decoder("ints", &[framed(300, iv)], 5000, &|b| {
            let (n, col) = split(b);
            drop(decode_ints(&mut &col[..], n));
        });
        fuzz_decoder("packed ints", &[framed(300, pi.clone())], 5000, &|b| {
            let (n, col) = split(b);
            drop(decode_packed_ints_range(&mut &col[..], n, n / 3, n / 2));
        });
        let tags: Vec<TagVal> = (0..300).map(|i| if i % 5 == 0 { TagVal::Null } else { TagVal::Str(format!("host-{}", i / 50)) }).collect();
        let mut tc = Vec::new();
        encode_tag_runs(&tags.iter().collect::<Vec<_>>(), &mut tc);
        fuzz_decoder("tag column", &[framed(300, tc)], 5000, &|b| {
            let (n, col) = split(b);
            drop(decode_tag_column(&mut &col[..], n));
        });
        let columns: Vec<Vec<FieldVal>> = vec![
            (0..300).map(|i| FieldVal::Float(i as f64 * 0.25)).collect(),
            (0..300).map(|i| FieldVal::Float((i as f64).sin())).collect(),
            (0..300).map(|i| if i % 3 == 0 { FieldVal::Null } else { FieldVal::Int(i) }).collect(),
            (0..300).map(|i| FieldVal::Str(format!("s{}", i % 4))).collect(),
            gauge_walk(3000),
        ];
        let fields: Vec<Vec<u8>> = columns
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                encode_field_column(&c.iter().collect::<Vec<_>>(), &mut out);
                framed(c.len(), out)
            })
            .collect();
        assert_eq!(fields[4][3], FIELDS_FLOAT_DECIMAL | FIELDS_WALK, "a walk-coded column among them");
        fuzz_decoder("field column", &fields, 8000, &|b| {
            let (n, col) = split(b);
            drop(decode_field_column(&mut &col[..], n));
        });
        fuzz_decoder("typed field column", &fields, 8000, &|b| {
            let (n, col) = split(b);
            drop(decode_field_typed(&mut &col[..], n, 0, n));
        });
    }

    /// A gauge of hundredths clamped to [0, 100] by steps of up to 10.
    fn gauge_walk(n: usize) -> Vec<FieldVal> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut v = 9_000i64;
        (0..n)
            .map(|_| {
                v = (v + rng.random_range(-1000..=1000)).clamp(0, 10_000);
                FieldVal::Float(v as f64 / 100.0)
            })
            .collect()
    }

    #[test]
    fn a_gauge_is_walk_coded_and_tiny_or_regular_columns_bit_packed() {
        let kind_of = |vals: &[FieldVal]| {
            let mut buf = Vec::new();
            encode_field_column(&vals.iter().collect::<Vec<_>>(), &mut buf);
            let typed = decode_field_typed(&mut buf.as_slice(), vals.len(), 0, vals.len()).unwrap();
            assert_eq!(typed, FieldColumn::from_values(vals.to_vec()));
            (buf[0], buf.len())
        };
        let gauge = gauge_walk(8640);
        let (kind, len) = kind_of(&gauge);
        assert_eq!(kind, FIELDS_FLOAT_DECIMAL | FIELDS_WALK);
        let mut packed = Vec::new();
        encode_packed_ints(&gauge.iter().map(|v| (v.as_f64().unwrap() * 100.0).round() as i64).collect::<Vec<_>>(), &mut packed);
        assert!((len as f64) < packed.len() as f64 * 0.98, "{len} vs {}", packed.len());
        // Rows of a walk-coded column in the middle of a frame, with nulls
        // between them, read as the rows they were.
        let mut holes = gauge.clone();
        (0..holes.len()).step_by(7).for_each(|i| holes[i] = FieldVal::Null);
        let mut buf = Vec::new();
        encode_field_column(&holes.iter().collect::<Vec<_>>(), &mut buf);
        assert_eq!(buf[0], FIELDS_FLOAT_DECIMAL | FIELDS_WALK);
        let got = decode_field_typed(&mut buf.as_slice(), holes.len(), 1500, 1900).unwrap();
        assert_eq!(got, FieldColumn::from_values(holes[1500..1900].to_vec()));
        // Too few values for its header to pay.
        assert_eq!(kind_of(&gauge[..20]).0, FIELDS_FLOAT_DECIMAL | FIELDS_PACKED);
        // A counter of varying rate: its steps' classes are coded by their
        // frequency, where packing pays the widest step's bits for each.
        let counter: Vec<FieldVal> = (0..500).map(|i| FieldVal::Int(i * 15 + i * i % 7)).collect();
        let (kind, len) = kind_of(&counter);
        let mut packed = Vec::new();
        encode_packed_ints(&(0..500).map(|i| i * 15 + i * i % 7).collect::<Vec<i64>>(), &mut packed);
        assert_eq!(kind, FIELDS_INT | FIELDS_WALK);
        assert!(len < packed.len(), "{len} vs {}", packed.len());
    }

    /// The typed and run forms writers hand over encode to the very bytes
    /// the per-row forms do: parts written by either read the same.
    #[test]
    fn typed_columns_and_tag_set_runs_encode_as_their_rows_do() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..400 {
            let n = rng.random_range(1..40);
            let nulls = round % 3 == 0;
            let pick = rng.random_range(0..4);
            let vals: Vec<FieldVal> = (0..n)
                .map(|i| {
                    if nulls && rng.random_bool(0.3) {
                        return FieldVal::Null;
                    }
                    match pick {
                        0 => FieldVal::Float(rng.random_range(-50..50) as f64),
                        1 => FieldVal::Float(rng.random_range(-5000..5000) as f64 / 100.0),
                        2 => FieldVal::Float(rng.random::<f64>() * 1e6),
                        _ => FieldVal::Int(rng.random_range(-1000..1000) * i),
                    }
                })
                .collect();
            let mut want = Vec::new();
            encode_field_column(&vals.iter().collect::<Vec<_>>(), &mut want);
            // As a memtable builds it (typed, presence only once a null came) and as a decoder does.
            let mut pushed =
                FieldColumn::for_type(if pick == 3 { canopy_api::v1::FieldType::Int } else { canopy_api::v1::FieldType::Float });
            vals.iter().for_each(|v| pushed.push(v.clone()));
            for col in [pushed, FieldColumn::from_values(vals.clone())] {
                let mut got = Vec::new();
                encode_typed_field_column(&col, &mut got);
                assert_eq!(got, want, "{col:?}");
            }
        }
        // Sets of two tags in runs; neighbouring sets may share a value.
        let sets: Vec<Tags> = (0..4).map(|i| vec![TagVal::Str(format!("h{}", i / 2)), TagVal::Int(i)].into()).collect();
        for _ in 0..200 {
            let mut runs: Vec<(u32, &Tags)> = Vec::new();
            let mut rows: Vec<&Tags> = Vec::new();
            for _ in 0..rng.random_range(1..6) {
                let set = &sets[rng.random_range(0..sets.len())];
                let len = rng.random_range(1..4);
                rows.extend(std::iter::repeat_n(set, len));
                match runs.last_mut() {
                    Some((end, t)) if std::sync::Arc::ptr_eq(t, set) => *end = rows.len() as u32,
                    _ => runs.push((rows.len() as u32, set)),
                }
            }
            for t in 0..2 {
                let (mut want, mut got) = (Vec::new(), Vec::new());
                encode_tag_runs(&rows.iter().map(|r| &r[t]).collect::<Vec<_>>(), &mut want);
                encode_tag_set_runs(&runs, t, &mut got);
                assert_eq!(got, want);
            }
        }
    }
}
