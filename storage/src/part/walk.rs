//! Walk coding of an integer column (part format 9): each value coded from
//! the one before it, under a model of the column written in its header.
//!
//! Gauges move by steps and stay inside their range; many sit on a bound
//! for a while (CPU idle at 100 %, a queue at 0). Bit-packed deltas pay the
//! widest step's bits for every step and know nothing of bounds. Here each
//! value is one symbol:
//!
//! * `LO` or `HI`: the value is the column's minimum or maximum (its
//!   *bounds*, in the header) — a walk clamped at a bound lands on it far
//!   more often than on any one value inside;
//! * else its step's *class*: zero, or a sign and a range of magnitudes a
//!   power of two wide (the bit lengths below the largest step `R`'s, then
//!   the rest up to `R` cut into powers of two), the step's place in its
//!   class following as raw bits.
//!
//! Symbols are coded with the column's class frequencies in one of five
//! contexts: *far* from the bounds (more than `R` from both: no bound is
//! possible, only steps), *near* `LO` or `HI` (within `R`: the bound, with
//! its own probability, or a step), *on* `LO` or `HI` (after that symbol:
//! stay, or a step away). The bounds' four probabilities are all the
//! header adds; the contexts' steps take the class frequencies.
//!
//! Symbols are rANS-coded ([`rans`](super::rans)): a decoder finds a
//! symbol with one table load and a multiply, its place is a word read
//! ([`raw_bits`](super::raw_bits)). The next context depends on the value
//! only through "within `R` of a bound?", a branch the CPU predicts (a walk
//! stays near or far for many steps), so a symbol's decoding rarely waits
//! on the one before.
//!
//! On a clamped random walk this comes within ~1.5 % of the data's entropy,
//! where 11-bit packed steps cost ~10 % over it (docs/benchmarks.md). The
//! writer keeps whichever of this and bit-packing is smaller, so data the
//! model does not fit costs nothing. Values are coded in frames of
//! [`FRAME`], each with its byte length, so a reader decodes only the
//! frames its rows fall in.

use canopy_model::codec::{put_varint, take_varint, unzigzag, zigzag};

use super::rans::{RansDecoder, RansEncoder, Symbol};
use super::raw_bits::{BitReader, BitWriter};

/// Values per independently decodable frame.
const FRAME: usize = 4096;
/// Symbol frequencies sum to `ONE = 2^BITS` in every context.
const BITS: u32 = 10;
const ONE: u32 = 1 << BITS;
/// Widest column (maximum − minimum) coded: offsets and steps stay in i64.
const SPAN_MAX: u64 = 1 << 62;
/// Most symbols: `LO`, `HI`, zero and at most 2 × 122 step classes (for `R` up to
/// [`SPAN_MAX`]), indexed by a byte.
const SYMBOLS_MAX: usize = 256;
/// Symbols `LO` and `HI`; step classes follow.
const LO: usize = 0;
const HI: usize = 1;
/// Contexts.
const FAR: usize = 0;
const NEAR_LO: usize = 1;
const NEAR_HI: usize = 2;
const ON_LO: usize = 3;
const ON_HI: usize = 4;
const CONTEXTS: usize = 5;
/// A step symbol's next context: from the value it reaches.
const BY_VALUE: u8 = u8::MAX;

/// A symbol as a decoder applies it: the value is
/// `fixed + keep * p + sign * (base + raw bits)` for the previous value `p`
/// — arithmetic, no branch on the kind of symbol.
#[derive(Debug, Clone, Copy, Default)]
struct Sym {
    fixed: i64,
    keep: i64,
    sign: i64,
    base: i64,
    bits: u8,
    /// The context after this symbol, or [`BY_VALUE`].
    next: u8,
}

/// One context's frequencies: per slot of `ONE`, what decoding needs first,
/// inline (a decoder indexes it without loading a pointer first).
struct Table {
    /// Per slot: the symbol's frequency − 1 (the low `BITS`), the slot's
    /// offset into the symbol (the next `BITS`) and the symbol (bits 24–31).
    /// The state's update waits on this one load, not on the symbol's.
    slots: [u32; ONE as usize],
    /// The symbols as the encoder codes them (empty in a decoder's model,
    /// whose `slots` an encoder's leaves empty: preparing a symbol takes a
    /// 128-bit division).
    coded: Vec<Symbol>,
    /// False if no symbol has a frequency: nothing can be decoded here.
    any: bool,
}

impl Table {
    fn new(freq: &[u32], encoder: bool) -> Table {
        let mut t = Table { slots: [0; ONE as usize], coded: Vec::new(), any: false };
        let mut cum = 0u32;
        for (j, &f) in freq.iter().enumerate() {
            if encoder {
                t.coded.push(if f > 0 { Symbol::new(cum, f, BITS) } else { Symbol::default() });
            } else {
                for (offset, slot) in t.slots[cum as usize..(cum + f) as usize].iter_mut().enumerate() {
                    *slot = (f - 1) | (offset as u32) << BITS | (j as u32) << 24;
                }
            }
            cum += f;
        }
        t.any = cum > 0;
        t
    }
}

/// The model of one column, as its header states it.
struct Model {
    span: i64,
    r: i64,
    /// Positive step magnitudes' `(base, bits)`, ascending: the step
    /// classes are these negated (descending), zero, then these.
    mags: Vec<(i64, u32)>,
    /// The symbols: `LO`, `HI`, then the classes (at most [`SYMBOLS_MAX`]).
    syms: Box<[Sym; SYMBOLS_MAX]>,
    /// How many there are.
    len: usize,
    /// One per context, empty for a model that only names symbols.
    tables: Vec<Table>,
}

impl Model {
    /// The symbols of a column of `span` with steps up to `r`.
    fn shapes(span: i64, r: i64) -> Model {
        let mut mags = Vec::new();
        if r > 0 {
            let k = 64 - r.leading_zeros();
            mags.extend((1..k).map(|b| (1i64 << (b - 1), b - 1)));
            let mut base = 1i64 << (k - 1);
            while base <= r {
                let bits = 63 - ((r - base + 1) as u64).leading_zeros();
                mags.push((base, bits));
                base += 1 << bits;
            }
        }
        let step = |sign: i64, &(base, bits): &(i64, u32)| Sym { keep: 1, sign, base, bits: bits as u8, next: BY_VALUE, ..Sym::default() };
        let listed = [Sym { next: ON_LO as u8, ..Sym::default() }, Sym { fixed: span, next: ON_HI as u8, ..Sym::default() }]
            .into_iter()
            .chain(mags.iter().rev().map(|m| step(-1, m)))
            .chain([Sym { keep: 1, next: BY_VALUE, ..Sym::default() }])
            .chain(mags.iter().map(|m| step(1, m)));
        let mut syms = Box::new([Sym::default(); SYMBOLS_MAX]);
        let mut len = 0;
        for (slot, s) in syms.iter_mut().zip(listed) {
            *slot = s;
            len += 1;
        }
        Model { span, r, mags, syms, len, tables: Vec::new() }
    }

    /// These symbols' model from the class frequencies (`ONE` in all, or
    /// none) and the bounds' probabilities (of `ONE`): near `LO`, near
    /// `HI`, staying on `LO`, staying on `HI`; with the encoder's symbols
    /// if `encoder`.
    fn with_frequencies(mut self, classes: &[u32], bounds: [u32; 4], encoder: bool) -> Model {
        let m = &mut self;
        let zero = 2 + m.mags.len();
        let main: Vec<u32> = [0, 0].into_iter().chain(classes.iter().copied()).collect();
        // A bound with probability `q`, or the steps in `away` weighed by
        // their class frequencies.
        let with_bound = |bound: usize, q: u32, away: std::ops::Range<usize>| {
            let away_total: u64 = main[away.clone()].iter().map(|&f| f as u64).sum();
            let mut w = vec![0u64; main.len()];
            if away_total == 0 {
                w[bound] = (q > 0) as u64;
            } else {
                w[bound] = q as u64 * away_total;
                away.for_each(|j| w[j] = main[j] as u64 * (ONE - q) as u64);
            }
            Table::new(&normalize(&w), encoder)
        };
        m.tables = vec![
            Table::new(&main, encoder),
            with_bound(LO, bounds[0], 2..m.len),
            with_bound(HI, bounds[1], 2..m.len),
            with_bound(LO, bounds[2], zero + 1..m.len),
            with_bound(HI, bounds[3], 2..zero),
        ];
        self
    }

    /// The symbol of a step `s` (at most `r` in size).
    fn class_of(&self, s: i64) -> usize {
        let zero = 2 + self.mags.len();
        if s == 0 {
            return zero;
        }
        // Below r's top bit, a magnitude's class is its bit length.
        let k = (64 - s.unsigned_abs().leading_zeros()) as usize;
        let top = self.mags.last().map_or(0, |&(base, _)| 64 - base.leading_zeros() as usize);
        let i = if k < top { k - 1 } else { self.mags.partition_point(|&(base, _)| base <= s.abs()) - 1 };
        if s < 0 { zero - 1 - i } else { zero + 1 + i }
    }

    /// The context after value `v` reached by a symbol whose next context
    /// is `next` (or, with [`BY_VALUE`], whichever bound `v` is within `r`
    /// of — the nearer if both).
    #[inline(always)]
    fn context(&self, next: u8, v: i64) -> usize {
        if next != BY_VALUE {
            return next as usize;
        }
        // Wrapping: a damaged column's values may leave the span.
        let above = self.span.wrapping_sub(v);
        if v <= self.r && v <= above {
            NEAR_LO
        } else if above <= self.r {
            NEAR_HI
        } else {
            FAR
        }
    }

    /// The symbol coding value `v` in context `ctx` after value `p`.
    fn symbol(&self, ctx: usize, p: i64, v: i64) -> usize {
        match ctx {
            NEAR_LO | ON_LO if v == 0 => LO,
            NEAR_HI | ON_HI if v == self.span => HI,
            _ => self.class_of(v - p),
        }
    }
}

/// Frequencies summing to exactly `ONE`, each symbol seen at least 1, in
/// proportion to `counts`; all 0 if nothing was seen.
fn normalize(counts: &[u64]) -> Vec<u32> {
    let total: u128 = counts.iter().map(|&c| c as u128).sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    let mut f: Vec<u32> = counts.iter().map(|&c| if c == 0 { 0 } else { ((c as u128 * ONE as u128 / total) as u32).max(1) }).collect();
    let mut sum: i64 = f.iter().map(|&x| x as i64).sum();
    // The difference goes to (or comes from) the most frequent symbol,
    // whose share it changes least.
    while sum != ONE as i64 {
        let (i, &top) = f.iter().enumerate().max_by_key(|&(_, &x)| x).expect("a symbol was seen");
        let d = (ONE as i64 - sum).max(1 - top as i64);
        f[i] = (top as i64 + d) as u32;
        sum += d;
    }
    f
}

/// How often a context's value was its bound, of `ONE`: exactly 0 or `ONE`
/// when it never or always was.
fn bound_freq(on_bound: u64, seen: u64) -> u32 {
    match (on_bound, seen) {
        (0, _) => 0,
        (k, n) if k == n => ONE,
        (k, n) => ((k * ONE as u64 + n / 2) / n).clamp(1, ONE as u64 - 1) as u32,
    }
}

/// Codes `vals` (at least two), or `None` when the column is too wide for
/// this coding or, by an estimate from the symbols' counts, would not come
/// within `ESTIMATE_MARGIN` of `budget` bytes — what the caller has
/// already (bit-packed). The estimate spares building the model and coding
/// where walking does not pay, which on small flushed blocks cost more
/// than the rest of the part's encoding.
pub(crate) fn encode(vals: &[i64], budget: usize) -> Option<Vec<u8>> {
    let lo = *vals.iter().min()?;
    let hi = *vals.iter().max()?;
    let span = (hi as i128 - lo as i128) as u64;
    if span > SPAN_MAX || vals.len() < 2 {
        return None;
    }
    let offs: Vec<i64> = vals.iter().map(|&v| (v as i128 - lo as i128) as i64).collect();
    let r = offs.windows(2).map(|w| (w[1] - w[0]).abs()).max().unwrap_or(0);
    let span = span as i64;
    let mut out = Vec::new();
    put_varint(&mut out, zigzag(lo));
    put_varint(&mut out, span as u64);
    put_varint(&mut out, r as u64);
    if span == 0 {
        return Some(out);
    }
    // Pass 1: each value's context and symbol, and their statistics.
    let names = Model::shapes(span, r);
    let mut coded: Vec<(u8, u8)> = Vec::with_capacity(offs.len());
    let mut classes = vec![0u64; names.len - 2];
    let mut bounds = [[0u64; 2]; 4];
    for frame in offs.chunks(FRAME) {
        let mut ctx = names.context(BY_VALUE, frame[0]);
        for w in frame.windows(2) {
            let s = names.symbol(ctx, w[0], w[1]);
            coded.push((ctx as u8, s as u8));
            match s {
                LO | HI => bounds[ctx - 1][0] += 1,
                _ => classes[s - 2] += 1,
            }
            if ctx != FAR {
                bounds[ctx - 1][1] += 1;
            }
            ctx = names.context(names.syms[s].next, w[1]);
        }
    }
    if estimate(&names, &classes, &bounds, offs.len()) > budget as f64 * ESTIMATE_MARGIN {
        return None;
    }
    let classes = normalize(&classes);
    let bounds = bounds.map(|[k, n]| bound_freq(k, n));
    classes.iter().chain(&bounds).for_each(|&f| put_varint(&mut out, f as u64));
    // Pass 2: the frames.
    let m = names.with_frequencies(&classes, bounds, true);
    let first_bits = 64 - (span as u64).leading_zeros();
    let mut coded = coded.into_iter();
    for frame in offs.chunks(FRAME) {
        let (mut e, mut raw_bytes) = (RansEncoder::default(), Vec::new());
        let mut raw = BitWriter::new(&mut raw_bytes);
        raw.put(frame[0] as u64, first_bits);
        for w in frame.windows(2) {
            let (ctx, j) = coded.next().expect("a symbol per value");
            let sym = m.syms[j as usize];
            e.put(m.tables[ctx as usize].coded[j as usize]);
            raw.put(((w[1] - w[0]).abs() - sym.base) as u64 * (sym.keep as u64), sym.bits as u32);
        }
        raw.finish();
        let (coded, raw) = (e.finish(), raw_bytes);
        let mut len = Vec::new();
        put_varint(&mut len, coded.len() as u64);
        put_varint(&mut out, (len.len() + coded.len() + raw.len()) as u64);
        out.extend_from_slice(&len);
        out.extend_from_slice(&coded);
        out.extend_from_slice(&raw);
    }
    Some(out)
}

/// Walk coding is kept only when its estimated size is below this share of
/// packing's: smaller savings do not pay for its slower decoding.
const ESTIMATE_MARGIN: f64 = 0.97;

/// About how many bytes coding these symbol counts takes: each symbol's
/// information under the pooled class frequencies and the bounds'
/// probabilities, the raw bits, the header and the frames.
fn estimate(m: &Model, classes: &[u64], bounds: &[[u64; 2]; 4], n: usize) -> f64 {
    let info = |k: u64, n: u64| if k == 0 { 0.0 } else { k as f64 * (n as f64 / k as f64).log2() };
    let steps: u64 = classes.iter().sum();
    let class_bits: f64 = classes.iter().map(|&c| info(c, steps)).sum();
    let raw_bits: u64 = classes.iter().enumerate().map(|(j, &c)| c * m.syms[j + 2].bits as u64).sum();
    let bound_bits: f64 = bounds.iter().map(|&[k, n]| info(k, n) + info(n - k, n)).sum();
    let header = 2.0 * classes.len() as f64 + 16.0;
    (class_bits + raw_bits as f64 + bound_bits) / 8.0 + header + 24.0 * n.div_ceil(FRAME) as f64
}

/// Decodes values `[from, to)` of the `n` values written by [`encode`];
/// `buf` moves past all `n`. `None` if the bytes are not such a column.
pub(crate) fn decode_range(buf: &mut &[u8], n: usize, from: usize, to: usize) -> Option<Vec<i64>> {
    let lo = unzigzag(take_varint(buf)?);
    let span = take_varint(buf)?;
    let r = take_varint(buf)?;
    if span > SPAN_MAX || r > span || n < 2 || from > to || to > n {
        return None;
    }
    let mut out = Vec::with_capacity(to - from);
    if span == 0 {
        out.resize(to - from, lo);
        return Some(out);
    }
    let (span, r) = (span as i64, r as i64);
    let names = Model::shapes(span, r);
    let classes = names.len - 2;
    let mut freq =
        (0..classes + 4).map(|_| take_varint(buf).filter(|&f| f <= ONE as u64).map(|f| f as u32)).collect::<Option<Vec<u32>>>()?;
    let bounds: [u32; 4] = freq.split_off(classes).try_into().ok()?;
    if !matches!(freq.iter().sum::<u32>(), 0 | ONE) {
        return None;
    }
    let m = names.with_frequencies(&freq, bounds, false);
    let first_bits = 64 - (span as u64).leading_zeros();
    let mut vals = Vec::with_capacity(FRAME.min(n));
    for start in (0..n).step_by(FRAME) {
        let len = (n - start).min(FRAME);
        let bytes = take_varint(buf)? as usize;
        let mut frame = buf.get(..bytes)?;
        *buf = &buf[bytes..];
        if start + len <= from || start >= to {
            continue;
        }
        let coded = take_varint(&mut frame)? as usize;
        let mut d = RansDecoder::new(frame.get(..coded)?)?;
        let mut raw = BitReader::new(&frame[coded..]);
        let first = raw.take(first_bits) as i64;
        vals.clear();
        decode_frame(&m, &mut d, &mut raw, first, (to - start).min(len), &mut vals)?;
        // Every value in the span, checked once per frame (damaged input
        // may leave it; it then only never panics).
        if vals.iter().any(|&v| !(0..=span).contains(&v)) {
            return None;
        }
        // Offsets within the span: the sum is an original value.
        out.extend(vals[from.saturating_sub(start)..].iter().map(|&v| lo.wrapping_add(v)));
    }
    Some(out)
}

/// Decodes a frame's first `count` values, the first being `v`, into `vals`.
/// `None` if a symbol is needed where none can be (damaged input).
#[inline(never)]
fn decode_frame(m: &Model, d: &mut RansDecoder<'_>, raw: &mut BitReader, mut v: i64, count: usize, vals: &mut Vec<i64>) -> Option<()> {
    vals.reserve(count);
    vals.push(v);
    let far = &m.tables[FAR];
    let mut ctx = m.context(BY_VALUE, v);
    for _ in 1..count {
        // Far from the bounds is the common context: a branch the CPU
        // predicts, where indexing the context's table would make each
        // symbol's table wait on the value before.
        let t = if ctx == FAR { far } else { &m.tables[ctx % CONTEXTS] };
        if !t.any {
            // A zero frequency would stall the decoder.
            return None;
        }
        let e = t.slots[(d.slot(BITS) & (ONE - 1)) as usize];
        d.advance_by((e & (ONE - 1)) + 1, (e >> BITS) & (ONE - 1), BITS);
        let s = &m.syms[(e >> 24) as usize];
        let step = s.base.wrapping_add(raw.take(s.bits as u32) as i64);
        v = s.fixed.wrapping_add(s.keep.wrapping_mul(v)).wrapping_add(s.sign.wrapping_mul(step));
        ctx = m.context(s.next, v);
        vals.push(v);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// A random walk of hundredths clamped to [0, 100.00], steps ±10.00.
    fn clamped_walk(n: usize, seed: u64) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut v = rng.random_range(0..=10_000i64);
        (0..n)
            .map(|_| {
                v = (v + rng.random_range(-1000..=1000)).clamp(0, 10_000);
                v
            })
            .collect()
    }

    fn round_trip(vals: &[i64]) -> usize {
        let bytes = encode(vals, usize::MAX).expect("codable");
        let mut buf = &bytes[..];
        assert_eq!(decode_range(&mut buf, vals.len(), 0, vals.len()).as_deref(), Some(vals));
        assert!(buf.is_empty());
        // Any row range decodes to the same rows, and leaves the buffer past the column.
        for (a, b) in [(0, 1), (vals.len() - 1, vals.len()), (vals.len() / 3, vals.len() / 2), (5.min(vals.len()), 5.min(vals.len()))] {
            let mut buf = &bytes[..];
            assert_eq!(decode_range(&mut buf, vals.len(), a, b).as_deref(), Some(&vals[a..b]), "rows {a}..{b}");
            assert!(buf.is_empty());
        }
        bytes.len()
    }

    #[test]
    fn columns_of_every_shape_round_trip() {
        let mut rng = StdRng::seed_from_u64(3);
        round_trip(&[5, 5]);
        round_trip(&[i64::MIN / 4, i64::MAX / 4, 0]);
        round_trip(&[0, 1, 0, 1, 1, 0]);
        round_trip(&clamped_walk(5000, 1));
        round_trip(&(0..3000).map(|i| i * 15 + rng.random_range(0..3)).collect::<Vec<_>>());
        round_trip(&(0..2500).map(|_| rng.random_range(-3..=3) * 1_000_000_007).collect::<Vec<_>>());
        for _ in 0..200 {
            let n = rng.random_range(2..3000);
            let wide = 1i64 << rng.random_range(0..60);
            let vals: Vec<i64> = (0..n).map(|_| rng.random_range(-wide..=wide)).collect();
            round_trip(&vals);
        }
        assert!(encode(&[i64::MIN, i64::MAX], usize::MAX).is_none(), "too wide");
        let walk = clamped_walk(5000, 1);
        let size = encode(&walk, usize::MAX).unwrap().len();
        assert!(
            encode(&walk, size * 11 / 10).is_some() && encode(&walk, size * 9 / 10).is_none(),
            "coded only when estimated within the budget"
        );
    }

    #[test]
    fn a_clamped_walk_costs_within_three_percent_of_its_entropy() {
        let vals = clamped_walk(8640, 5);
        let bytes = round_trip(&vals) as f64;
        // The walk's information: each value is one of 2,001 steps, those
        // past a bound merged into the bound.
        let bits: f64 = vals
            .windows(2)
            .map(|w| {
                let p = w[0];
                let low = (1000 - p + 1).clamp(0, 2001) as f64;
                let high = (p + 1000 - 10_000 + 1).clamp(0, 2001) as f64;
                match w[1] {
                    0 if low > 0.0 => (2001.0 / low).log2(),
                    10_000 if high > 0.0 => (2001.0 / high).log2(),
                    _ => 2001f64.log2(),
                }
            })
            .sum();
        let ratio = bytes * 8.0 / bits;
        assert!(ratio < 1.03, "{ratio}");
        // Bit-packed steps: 11 bits each, at least.
        assert!(bytes * 8.0 < 11.0 * vals.len() as f64 * 0.97);
    }

    #[test]
    fn damaged_bytes_decode_to_none_or_values_but_never_panic() {
        let vals = clamped_walk(3000, 9);
        let bytes = encode(&vals, usize::MAX).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..2000 {
            let mut b = bytes.clone();
            let i = rng.random_range(0..b.len());
            b[i] ^= 1 << rng.random_range(0..8);
            b.truncate(rng.random_range(i..=b.len()));
            let _ = decode_range(&mut &b[..], vals.len(), 0, vals.len());
        }
    }
}
