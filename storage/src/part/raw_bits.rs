//! A stream of raw bit fields, least significant bit first: what is left of
//! a value once a model has said everything it knows (the place of a step
//! in a power-of-two class is uniform), read without any coding work.

/// Appends bit fields to a byte vector (bit-packed frames and walk-coded
/// places both write through it).
pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u128,
    bits: u32,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> BitWriter<'a> {
        BitWriter { out, acc: 0, bits: 0 }
    }

    /// Appends the low `n` bits of `v` (`n <= 64`).
    #[inline]
    pub(crate) fn put(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64 && (n == 64 || v >> n == 0));
        self.acc |= (v as u128) << self.bits;
        self.bits += n;
        while self.bits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.bits -= 8;
        }
    }

    /// Writes the last, partial byte (padded with zeros).
    pub(crate) fn finish(self) {
        if self.bits > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads the fields a [`BitWriter`] wrote; zeros past the end (only damaged
/// input reads there).
pub(crate) struct BitReader {
    /// The bytes and 8 zeros after them, so every read is one word.
    src: Vec<u8>,
    pos: usize,
}

impl BitReader {
    pub(crate) fn new(src: &[u8]) -> BitReader {
        let mut padded = Vec::with_capacity(src.len() + 8);
        padded.extend_from_slice(src);
        padded.extend_from_slice(&[0; 8]);
        BitReader { src: padded, pos: 0 }
    }

    /// The next `n` bits (`n <= 64`).
    #[inline(always)]
    pub(crate) fn take(&mut self, n: u32) -> u64 {
        if n > 56 {
            return self.take_wide(n);
        }
        let v = (self.word() >> (self.pos % 8)) & ((1u64 << n) - 1);
        self.pos += n as usize;
        v
    }

    /// A field wider than one word read can hold (7 + 56 bits).
    #[cold]
    fn take_wide(&mut self, n: u32) -> u64 {
        let low = self.take(32);
        low | self.take(n - 32) << 32
    }

    /// The 8 bytes from the current one (zeros past the end).
    #[inline(always)]
    fn word(&self) -> u64 {
        let byte = self.pos / 8;
        match self.src.get(byte..byte + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn fields_of_every_width_round_trip() {
        let mut rng = StdRng::seed_from_u64(2);
        let fields: Vec<(u64, u32)> = (0..20_000)
            .map(|_| {
                let n = rng.random_range(0..=64);
                (if n == 64 { rng.random() } else { rng.random::<u64>() & ((1u64 << n) - 1) }, n)
            })
            .collect();
        let mut bytes = Vec::new();
        let mut w = BitWriter::new(&mut bytes);
        fields.iter().for_each(|&(v, n)| w.put(v, n));
        w.finish();
        assert_eq!(bytes.len(), fields.iter().map(|&(_, n)| n as usize).sum::<usize>().div_ceil(8));
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &fields {
            assert_eq!(r.take(n), v, "{n} bits");
        }
        assert_eq!(r.take(20), 0, "zeros past the end");
    }
}
