//! Range asymmetric numeral systems (rANS: 64-bit state, 32-bit words):
//! codes symbols whose probabilities are `freq / 2^bits` in fractional
//! bits, which bit-packing and zstd's byte-wise Huffman cannot, and decodes
//! each with a mask, a multiply and an add — no division.
//! [`walk`](super::walk) builds its value model on it.
//!
//! rANS decodes in the reverse order it encodes: the encoder keeps the
//! symbols and codes them backwards in [`RansEncoder::finish`], so the
//! decoder reads them forwards. Symbols alternate between two states that
//! share the word stream, so a decoder works on one symbol while the
//! previous one's state update is still in flight. A 64-bit state takes a
//! new word every ~10 symbols of ~3 bits, a branch the CPU mostly predicts
//! (a 32-bit state taking a byte every third symbol mispredicted often).

/// The state stays in `[LOW, LOW << 32)`.
const LOW: u64 = 1 << 31;
/// Largest `bits` of a symbol's scale.
pub(crate) const SCALE_BITS_MAX: u32 = 16;

/// A symbol, `[start, start + freq)` of `2^bits`, prepared for encoding:
/// the division by `freq` rANS needs is a multiply by `mul` and a shift.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Symbol {
    start: u32,
    freq: u32,
    bits: u32,
    mul: u64,
    shift: u32,
}

impl Symbol {
    pub(crate) fn new(start: u32, freq: u32, bits: u32) -> Symbol {
        debug_assert!(freq > 0 && bits <= SCALE_BITS_MAX && start + freq <= 1 << bits);
        // For x < 2^63: x / freq = (x * mul) >> shift, with shift = 63 +
        // ceil(log2 freq) and mul = ceil(2^shift / freq) < 2^64 (its
        // error, under freq, stays below 2^(shift - 63)).
        let shift = 63 + (32 - (freq - 1).leading_zeros());
        let mul = (1u128 << shift).div_ceil(freq as u128) as u64;
        Symbol { start, freq, bits, mul, shift }
    }
}

/// Collects symbols, then codes them into bytes.
#[derive(Default)]
pub(crate) struct RansEncoder {
    syms: Vec<Symbol>,
}

impl RansEncoder {
    /// Queues a symbol.
    #[inline]
    pub(crate) fn put(&mut self, s: Symbol) {
        self.syms.push(s);
    }

    /// The coded bytes: the two final states (8 bytes each), then the
    /// words renormalising shifted out, in the order the decoder reads them.
    pub(crate) fn finish(self) -> Vec<u8> {
        let mut states = [LOW; 2];
        let mut words: Vec<u32> = Vec::with_capacity(self.syms.len() / 8 + 4);
        for (i, s) in self.syms.iter().enumerate().rev() {
            let x = &mut states[i & 1];
            // Shift a word out if coding the symbol would take the state past LOW << 32.
            if *x >= ((LOW >> s.bits) << 32) * s.freq as u64 {
                words.push(*x as u32);
                *x >>= 32;
            }
            let q = ((*x as u128 * s.mul as u128) >> s.shift) as u64;
            *x = (q << s.bits) + (*x - q * s.freq as u64) + s.start as u64;
        }
        let mut out = Vec::with_capacity(16 + 4 * words.len());
        states.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        words.iter().rev().for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
        out
    }
}

/// Decodes what [`RansEncoder`] wrote, symbol by symbol, with the same
/// scales in the same order.
pub(crate) struct RansDecoder<'a> {
    /// The state of the next symbol.
    x: u64,
    /// The state of the symbol after it.
    next: u64,
    /// The words after the states.
    src: &'a [u8],
}

impl<'a> RansDecoder<'a> {
    /// `None` unless `src` starts with two valid states.
    pub(crate) fn new(src: &'a [u8]) -> Option<RansDecoder<'a>> {
        let x = u64::from_le_bytes(src.get(..8)?.try_into().ok()?);
        let next = u64::from_le_bytes(src.get(8..16)?.try_into().ok()?);
        let valid = |x: u64| (LOW..LOW << 32).contains(&x);
        (valid(x) && valid(next)).then_some(RansDecoder { x, next, src: &src[16..] })
    }

    /// Where the next symbol falls in `[0, 2^bits)`: the symbol whose
    /// `[start, start + freq)` holds it is the one decoded, and
    /// [`advance_by`](Self::advance_by) removes it.
    #[inline(always)]
    pub(crate) fn slot(&self, bits: u32) -> u32 {
        (self.x & ((1 << bits) - 1)) as u32
    }

    /// Removes the symbol found at [`slot`](Self::slot), given its `freq`
    /// (> 0) and the slot's offset into it (`slot - start`) — what a
    /// decoder's table holds per slot, so the state's update waits on one
    /// load. Past the end of the words it reads zeros (only damaged input
    /// gets there).
    #[inline(always)]
    pub(crate) fn advance_by(&mut self, freq: u32, offset: u32, bits: u32) {
        debug_assert!(offset < freq && bits <= SCALE_BITS_MAX);
        let mut x = freq as u64 * (self.x >> bits) + offset as u64;
        // The state is at least 2^(31 - bits) here (freq > 0, a state at
        // least LOW before): one word restores it.
        if x < LOW {
            let word = match self.src.split_first_chunk::<4>() {
                Some((w, rest)) => {
                    self.src = rest;
                    u32::from_le_bytes(*w)
                }
                None => 0,
            };
            x = x << 32 | word as u64;
        }
        self.x = std::mem::replace(&mut self.next, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn symbols_round_trip() {
        let mut rng = StdRng::seed_from_u64(7);
        let syms: Vec<(u32, u32, u32)> = (0..50_000)
            .map(|_| {
                let bits = rng.random_range(0..=SCALE_BITS_MAX);
                let start = rng.random_range(0..1u32 << bits);
                (start, rng.random_range(1..=(1u32 << bits) - start), bits)
            })
            .collect();
        let mut e = RansEncoder::default();
        syms.iter().for_each(|&(s, f, b)| e.put(Symbol::new(s, f, b)));
        let bytes = e.finish();
        let mut d = RansDecoder::new(&bytes).unwrap();
        for &(start, freq, bits) in &syms {
            let slot = d.slot(bits);
            assert!(start <= slot && slot < start + freq);
            d.advance_by(freq, slot - start, bits);
        }
    }

    #[test]
    fn the_reciprocal_divides_exactly() {
        let mut rng = StdRng::seed_from_u64(3);
        for freq in (1..=1u32 << 13).chain([65_535, 65_536]) {
            let s = Symbol::new(0, freq, SCALE_BITS_MAX);
            let edges = [0, 1, freq as u64 - 1, freq as u64, (1 << 63) - 1];
            for x in edges.into_iter().chain((0..30).map(|_| rng.random_range(0..1u64 << 63))) {
                assert_eq!(((x as u128 * s.mul as u128) >> s.shift) as u64, x / freq as u64, "{x} / {freq}");
            }
        }
    }

    #[test]
    fn the_cost_is_the_information() {
        // 100,000 symbols of probability 3/4096: log2(4096/3) bits each, within 0.1 %.
        let mut e = RansEncoder::default();
        (0..100_000).for_each(|i| e.put(Symbol::new(3 * (i % 1000), 3, 12)));
        let bits = e.finish().len() as f64 * 8.0;
        let ideal = 100_000.0 * (4096f64 / 3.0).log2();
        assert!(bits < ideal * 1.001 + 128.0 && bits > ideal - 128.0, "{bits} vs {ideal}");
        let mut e = RansEncoder::default();
        (0..100_000).for_each(|_| e.put(Symbol::new(0, 4095, 12)));
        assert!(e.finish().len() < 100, "near-certain symbols cost almost nothing");
    }
}
