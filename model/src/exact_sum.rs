//! An exact float accumulator: the sum of any set of doubles, held as a
//! fixed-point integer wide enough for every finite double, rounded once
//! when read. The result is the correctly rounded exact sum, so it does not
//! depend on the order values are added or partial sums merged — standalone,
//! cluster and a shard split over queriers give bit-identical answers.
//!
//! Every finite double is `m × 2^(p − 1074)` with `m < 2^53` and
//! `0 ≤ p ≤ 2045`, so the sum is an integer count of `2^-1074` units. It is
//! kept as signed 32-bit digits in `i64` words (a window of the ones touched
//! so far), which leaves 31 bits of headroom: carries are propagated only
//! every 2^30 additions.

use crate::value::{put_varint, take_len, take_varint, unzigzag, zigzag};

/// Bits per digit.
const DIGIT_BITS: u32 = 32;
const DIGIT_MASK: u64 = (1 << DIGIT_BITS) - 1;
/// Additions before carries must be propagated (each adds < 2^32 a word).
const ADDS_BEFORE_CARRY: u32 = 1 << 30;
/// Position of 2^0 in units of 2^-1074.
const UNIT_POSITION: u32 = 1074;

/// The exact sum of the doubles added (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ExactSum {
    /// Index of `digits[0]`: its weight is 2^(32 × lo − 1074).
    lo: u32,
    digits: Vec<i64>,
    /// Additions since carries were last propagated.
    adds: u32,
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
}

impl ExactSum {
    /// Adds one double exactly.
    #[inline]
    pub fn add(&mut self, v: f64) {
        let bits = v.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as u32;
        let frac = bits & ((1 << 52) - 1);
        if exp == 0x7ff {
            match (frac != 0, v > 0.0) {
                (true, _) => self.nan = true,
                (false, true) => self.pos_inf = true,
                (false, false) => self.neg_inf = true,
            }
            return;
        }
        let m = if exp == 0 { frac } else { frac | 1 << 52 };
        if m != 0 {
            self.add_at(m, exp.max(1) - 1, bits >> 63 == 1);
        }
    }

    /// Adds many doubles exactly: summed per binary exponent as signed
    /// mantissas (one integer addition each; 1,024 mantissas below 2^53
    /// cannot overflow an `i64`), then each exponent's total goes into the
    /// digits once per chunk. (Summing a run as shifted mantissas in one
    /// `i128` measured a third slower: two passes and wide shifts.)
    pub fn add_all(&mut self, vals: &[f64]) {
        const CHUNK: usize = 1 << 10;
        thread_local! {
            /// Per-exponent totals; all zero between calls (16 KiB, not
            /// zeroed afresh for every run of values).
            static BY_EXP: std::cell::RefCell<[i64; 2048]> = const { std::cell::RefCell::new([0; 2048]) };
        }
        BY_EXP.with_borrow_mut(|by_exp| {
            for chunk in vals.chunks(CHUNK) {
                let (mut lo, mut hi) = (usize::MAX, 0usize);
                for &v in chunk {
                    let bits = v.to_bits();
                    let exp = ((bits >> 52) & 0x7ff) as usize;
                    if exp == 0x7ff {
                        self.add(v);
                        continue;
                    }
                    let frac = (bits & ((1 << 52) - 1)) as i64;
                    let m = if exp == 0 { frac } else { frac | 1 << 52 };
                    by_exp[exp] += if bits >> 63 == 1 { -m } else { m };
                    lo = lo.min(exp);
                    hi = hi.max(exp);
                }
                if lo > hi {
                    continue;
                }
                for (exp, total) in by_exp[lo..=hi].iter_mut().enumerate() {
                    if *total != 0 {
                        let p = ((lo + exp).max(1) - 1) as u32;
                        self.add_at(total.unsigned_abs(), p, *total < 0);
                        *total = 0;
                    }
                }
            }
        });
    }

    /// Adds an integer exactly.
    pub fn add_int(&mut self, v: i128) {
        let mag = v.unsigned_abs();
        self.add_at(mag as u64, UNIT_POSITION, v < 0);
        self.add_at((mag >> 64) as u64, UNIT_POSITION + 64, v < 0);
    }

    /// Adds `±m × 2^(p − 1074)`.
    #[inline]
    fn add_at(&mut self, m: u64, p: u32, negative: bool) {
        if m == 0 {
            return;
        }
        let idx = p / DIGIT_BITS;
        let x = (m as u128) << (p % DIGIT_BITS);
        self.cover(idx, idx + 3);
        let at = (idx - self.lo) as usize;
        let parts = [(x as u64 & DIGIT_MASK) as i64, ((x >> 32) as u64 & DIGIT_MASK) as i64, (x >> 64) as i64];
        let words = &mut self.digits[at..at + 3];
        for (w, d) in words.iter_mut().zip(parts) {
            *w += if negative { -d } else { d };
        }
        self.adds += 1;
        if self.adds >= ADDS_BEFORE_CARRY {
            self.carry();
        }
    }

    /// Widens the window to hold digits `[from, to)`.
    #[inline]
    fn cover(&mut self, from: u32, to: u32) {
        if self.digits.is_empty() {
            self.lo = from;
            self.digits.resize((to - from) as usize, 0);
            return;
        }
        if from < self.lo {
            let grow = (self.lo - from) as usize;
            self.digits.splice(0..0, std::iter::repeat_n(0, grow));
            self.lo = from;
        }
        let hi = self.lo + self.digits.len() as u32;
        if to > hi {
            self.digits.resize(self.digits.len() + (to - hi) as usize, 0);
        }
    }

    /// Propagates carries: every digit but the top one ends in `[0, 2^32)`,
    /// the top one holds the sign and stays within `[-2^31, 2^31)`.
    fn carry(&mut self) {
        let mut i = 0;
        while i < self.digits.len() {
            let d = self.digits[i];
            let last = i + 1 == self.digits.len();
            if last && (-(1 << 31)..1 << 31).contains(&d) {
                break;
            }
            let c = d >> DIGIT_BITS;
            self.digits[i] = d - (c << DIGIT_BITS);
            if last {
                self.digits.push(c);
            } else {
                self.digits[i + 1] += c;
            }
            i += 1;
        }
        self.adds = 0;
    }

    /// Merges another partial sum.
    pub fn merge(&mut self, o: &ExactSum) {
        self.nan |= o.nan;
        self.pos_inf |= o.pos_inf;
        self.neg_inf |= o.neg_inf;
        if o.digits.is_empty() {
            return;
        }
        let mut o = o.clone();
        o.carry();
        self.carry();
        self.cover(o.lo, o.lo + o.digits.len() as u32);
        let at = (o.lo - self.lo) as usize;
        for (w, d) in self.digits[at..].iter_mut().zip(&o.digits) {
            *w += d;
        }
        self.adds = 2;
    }

    /// The normalised digits without zero words at either end, and the
    /// index of the first: one representation per value.
    fn canonical(&self) -> (u32, Vec<i64>) {
        let mut c = self.clone();
        c.carry();
        let first = c.digits.iter().position(|&d| d != 0);
        let last = c.digits.iter().rposition(|&d| d != 0);
        let (lo, mut digits) = match (first, last) {
            (Some(a), Some(b)) => (c.lo + a as u32, c.digits[a..=b].to_vec()),
            _ => return (0, Vec::new()),
        };
        // A negative number has two normal forms: `[d, -1]` with d ≥ 2^31
        // equals `[d - 2^32]`. Keep the shorter, so equal sums encode alike.
        while digits.len() >= 2 && digits[digits.len() - 1] == -1 && digits[digits.len() - 2] >= 1 << 31 {
            digits.pop();
            *digits.last_mut().expect("len >= 1") -= 1 << DIGIT_BITS;
        }
        (lo, digits)
    }

    /// The sum, correctly rounded to the nearest double (ties to even).
    pub fn value(&self) -> f64 {
        if self.nan || (self.pos_inf && self.neg_inf) {
            return f64::NAN;
        }
        if self.pos_inf {
            return f64::INFINITY;
        }
        if self.neg_inf {
            return f64::NEG_INFINITY;
        }
        let (lo, mut digits) = self.canonical();
        let Some(&top) = digits.last() else { return 0.0 };
        let negative = top < 0;
        if negative {
            // Negate, then normalise again: all digits become magnitudes.
            let mut n = ExactSum { lo, digits: digits.iter().map(|d| -d).collect(), ..Default::default() };
            n.carry();
            digits = n.digits;
            while digits.last() == Some(&0) {
                digits.pop();
            }
        }
        let h = digits.len() - 1;
        let start = h.saturating_sub(2);
        let mut acc: u128 = 0;
        for &d in digits[start..=h].iter().rev() {
            acc = acc << DIGIT_BITS | d as u128;
        }
        let sticky = digits[..start].iter().any(|&d| d != 0);
        // The weight of acc's lowest bit, as a power of two.
        let mut exp = (DIGIT_BITS * (lo + start as u32)) as i32 - UNIT_POSITION as i32;
        let bits = 128 - acc.leading_zeros();
        let mant = if bits <= 53 {
            // Exact: fewer significant bits than a double holds.
            acc as u64
        } else {
            let shift = bits - 53;
            let mut m = (acc >> shift) as u64;
            let rem = acc & ((1u128 << shift) - 1);
            let half = 1u128 << (shift - 1);
            if rem > half || (rem == half && (sticky || m & 1 == 1)) {
                m += 1;
            }
            exp += shift as i32;
            m
        };
        let v = scale_by_pow2(mant as f64, exp);
        if negative { -v } else { v }
    }

    /// Appends the sum in a compact, exact form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (lo, digits) = self.canonical();
        out.push(self.nan as u8 | (self.pos_inf as u8) << 1 | (self.neg_inf as u8) << 2);
        put_varint(out, lo as u64);
        put_varint(out, digits.len() as u64);
        digits.iter().for_each(|&d| put_varint(out, zigzag(d)));
    }

    /// Reads what [`ExactSum::encode`] wrote.
    pub fn decode(b: &mut &[u8]) -> Option<ExactSum> {
        let (&flags, rest) = b.split_first()?;
        *b = rest;
        if flags > 7 {
            return None;
        }
        let lo = u32::try_from(take_varint(b)?).ok().filter(|&lo| lo < 128)?;
        let n = take_len(b)?;
        if n > 128 {
            return None;
        }
        let digits = (0..n).map(|_| take_varint(b).map(unzigzag)).collect::<Option<Vec<i64>>>()?;
        Some(ExactSum { lo, digits, adds: 1, nan: flags & 1 != 0, pos_inf: flags & 2 != 0, neg_inf: flags & 4 != 0 })
    }
}

impl PartialEq for ExactSum {
    fn eq(&self, o: &ExactSum) -> bool {
        (self.nan, self.pos_inf, self.neg_inf) == (o.nan, o.pos_inf, o.neg_inf) && self.canonical() == o.canonical()
    }
}

/// `x × 2^e`, exact whenever the result is representable: scales in steps
/// that keep every intermediate a normal number.
fn scale_by_pow2(mut x: f64, mut e: i32) -> f64 {
    let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
        if x.is_infinite() {
            return x;
        }
    }
    while e < -1000 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn sum(vals: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        vals.iter().for_each(|&v| s.add(v));
        s.value()
    }

    #[test]
    fn cancellation_and_tiny_terms_are_exact() {
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        // The doubles nearest 0.1, 0.2 and 0.3 differ by exactly 2^-55.
        assert_eq!(sum(&[0.1, 0.2, -0.3]), 2f64.powi(-55));
        assert_eq!(sum(&[f64::MIN_POSITIVE / 4.0, f64::MIN_POSITIVE / 4.0]), f64::MIN_POSITIVE / 2.0);
        assert_eq!(sum(&[f64::from_bits(1); 3]), f64::from_bits(3));
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(sum(&[-2.5, -0.5]), -3.0);
        assert_eq!(sum(&[]), 0.0);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum(&[1.0, f64::NAN]).is_nan());
        assert_eq!(sum(&[1.0, f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }

    #[test]
    fn rounds_to_nearest_even_with_a_sticky_bit() {
        // 1 + 2^-53 is a tie: stays 1 (even). A further tiny term breaks the tie upward.
        let half_ulp = f64::EPSILON / 2.0;
        assert_eq!(sum(&[1.0, half_ulp]), 1.0);
        assert_eq!(sum(&[1.0, half_ulp, 1e-300]), 1.0 + f64::EPSILON);
        assert_eq!(sum(&[1.0 + f64::EPSILON, half_ulp]), 1.0 + 2.0 * f64::EPSILON, "tie to even rounds up from odd");
    }

    #[test]
    fn integers_add_exactly() {
        let mut s = ExactSum::default();
        s.add_int(i64::MAX as i128 * 4);
        s.add(0.5);
        s.add_int(-(i64::MAX as i128 * 4));
        assert_eq!(s.value(), 0.5);
        let mut s = ExactSum::default();
        s.add_int(-7);
        assert_eq!(s.value(), -7.0);
    }

    #[test]
    fn any_order_and_any_split_give_the_same_bits() {
        let seed = crate::testing::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let n = rng.random_range(1..300);
            let mut vals: Vec<f64> = (0..n)
                .map(|_| match rng.random_range(0..4) {
                    0 => rng.random_range(-1e6..1e6),
                    1 => rng.random_range(-1.0..1.0) * 10f64.powi(rng.random_range(-300..300)),
                    2 => (rng.random_range(-1_000_000..1_000_000) as f64) / 100.0,
                    _ => f64::from_bits(rng.random_range(1..1 << 20)),
                })
                .collect();
            let want = sum(&vals);
            vals.shuffle(&mut rng);
            assert_eq!(sum(&vals).to_bits(), want.to_bits(), "seed {seed}");
            let mut all = ExactSum::default();
            all.add(1.5);
            all.add_all(&vals);
            all.add(-1.5);
            assert_eq!(all.value().to_bits(), want.to_bits(), "seed {seed}: add_all");
            let cut = rng.random_range(0..=vals.len());
            let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
            vals[..cut].iter().for_each(|&v| a.add(v));
            vals[cut..].iter().for_each(|&v| b.add(v));
            let mut buf = Vec::new();
            b.encode(&mut buf);
            let b = ExactSum::decode(&mut buf.as_slice()).unwrap();
            a.merge(&b);
            assert_eq!(a.value().to_bits(), want.to_bits(), "seed {seed}");
        }
        // Multiples of 2^-20 below 2^32 are exact doubles, and their exact
        // sum is an integer count of 2^-20 that i128 holds: rounded once.
        for _ in 0..200 {
            let units: Vec<i64> = (0..rng.random_range(1..100)).map(|_| rng.random_range(-(1i64 << 52)..1 << 52)).collect();
            let vals: Vec<f64> = units.iter().map(|&u| u as f64 / (1u64 << 20) as f64).collect();
            let want = units.iter().map(|&u| u as i128).sum::<i128>() as f64 / (1u64 << 20) as f64;
            assert_eq!(sum(&vals), want, "seed {seed}");
        }
    }

    /// Runs within one binade up to sixty, with zeros, signs, subnormals
    /// and infinities: `add_all` equals adding one value at a time, bit for bit.
    #[test]
    fn runs_of_any_spread_add_all_like_one_at_a_time() {
        let seed = crate::testing::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for spread in [0i32, 1, 5, 13, 49, 50, 51, 60] {
            for base in [-1074i32, -1040, -20, 0, 6, 1000] {
                let n = rng.random_range(1..2000);
                let vals: Vec<f64> = (0..n)
                    .map(|_| match rng.random_range(0..10) {
                        0 => 0.0,
                        1 => -0.0,
                        _ => {
                            let mag = rng.random_range(1.0..2.0) * 2f64.powi(base + rng.random_range(0..=spread));
                            if rng.random_bool(0.5) { -mag } else { mag }
                        }
                    })
                    .collect();
                let mut one = ExactSum::default();
                vals.iter().for_each(|&v| one.add(v));
                let mut all = ExactSum::default();
                all.add(3.25);
                all.add_all(&vals);
                all.add(-3.25);
                assert_eq!(all.value().to_bits(), one.value().to_bits(), "seed {seed}, spread {spread}, base {base}");
                let (mut a, mut b) = (Vec::new(), Vec::new());
                all.encode(&mut a);
                one.encode(&mut b);
                assert_eq!(a, b, "seed {seed}, spread {spread}, base {base}");
            }
        }
    }

    #[test]
    fn equal_negative_sums_compare_and_encode_alike() {
        // -1 unit of digit 5, in both normal forms.
        let short = ExactSum { lo: 5, digits: vec![-1], adds: 1, ..Default::default() };
        let long = ExactSum { lo: 5, digits: vec![0xFFFF_FFFF, -1], adds: 1, ..Default::default() };
        assert_eq!(short.value(), long.value());
        assert!(short.value() < 0.0);
        assert_eq!(short, long);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        short.encode(&mut a);
        long.encode(&mut b);
        assert_eq!(a, b);
        assert_eq!(ExactSum::decode(&mut b.as_slice()).unwrap().value(), short.value());
    }

    #[test]
    fn carries_survive_many_additions() {
        let mut s = ExactSum::default();
        for _ in 0..3 {
            s.adds = ADDS_BEFORE_CARRY - 1;
            s.add(f64::MAX / 2.0);
        }
        for _ in 0..3 {
            s.add(-f64::MAX / 2.0);
        }
        assert_eq!(s.value(), 0.0);
        let mut s = ExactSum::default();
        (0..100_000).for_each(|_| s.add(0.1));
        let naive: f64 = (0..100_000).map(|_| 0.1).sum();
        assert_ne!(naive, 10_000.0);
        assert_eq!(s.value(), 10_000.0, "the exact sum is 10000 + 5.6e-13, nearest double 10000");
    }
}
