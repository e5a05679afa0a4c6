//! A deterministic generator of the TSBS "devops cpu-only" use case:
//! measurement `cpu`, ten host tags, ten usage fields that are clamped
//! random walks in [0, 100], one row per host every 10 s. Values are rounded
//! to two decimals (as CPU exporters report them) so both peers store them
//! exactly and answers can be compared for equality.

/// The ten fields of a cpu row.
pub const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

/// The ten tags of a host, in TSBS order.
pub const TAGS: [&str; 10] =
    ["hostname", "region", "datacenter", "rack", "os", "arch", "team", "service", "service_version", "service_environment"];

const REGIONS: [&str; 9] =
    ["us-east-1", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "sa-east-1"];
const OS: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCH: [&str; 2] = ["x64", "x86"];
const TEAM: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENV: [&str; 3] = ["production", "staging", "test"];

/// Seconds between two rows of a host.
pub const INTERVAL_SECS: i64 = 10;

/// A small, fast, seeded PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A host: its tag values, in `TAGS` order.
#[derive(Debug, Clone)]
pub struct Host {
    pub tags: [String; 10],
}

/// The hosts of a scale, deterministic in the seed.
pub fn hosts(scale: usize, seed: u64) -> Vec<Host> {
    let mut r = Rng::new(seed);
    (0..scale)
        .map(|i| {
            let region = REGIONS[r.below(REGIONS.len() as u64) as usize];
            let dc = format!("{region}{}", ["a", "b", "c"][r.below(3) as usize]);
            Host {
                tags: [
                    format!("host_{i}"),
                    region.to_string(),
                    dc,
                    r.below(100).to_string(),
                    OS[r.below(3) as usize].to_string(),
                    ARCH[r.below(2) as usize].to_string(),
                    TEAM[r.below(4) as usize].to_string(),
                    r.below(20).to_string(),
                    r.below(2).to_string(),
                    ENV[r.below(3) as usize].to_string(),
                ],
            }
        })
        .collect()
}

/// One row: host index, timestamp in seconds, ten field values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub host: usize,
    pub ts_secs: i64,
    pub values: [f64; 10],
}

/// Every row of the run in time order (all hosts at t, then t + 10 s, ...).
pub fn rows(scale: usize, start_secs: i64, steps: usize, seed: u64) -> Vec<Row> {
    let mut r = Rng::new(seed ^ 0xC0FF_EE00);
    let mut state: Vec<[f64; 10]> = (0..scale).map(|_| std::array::from_fn(|_| (r.below(10_001) as f64) / 100.0)).collect();
    let mut out = Vec::with_capacity(scale * steps);
    for step in 0..steps {
        for (h, s) in state.iter_mut().enumerate() {
            for v in s.iter_mut() {
                let delta = (r.below(2001) as f64 - 1000.0) / 100.0; // ±10.00
                *v = ((*v + delta).clamp(0.0, 100.0) * 100.0).round() / 100.0;
            }
            out.push(Row { host: h, ts_secs: start_secs + step as i64 * INTERVAL_SECS, values: *s });
        }
    }
    out
}

/// Rows as an Influx line-protocol body (seconds precision), as the
/// benchmark and `examples/line_protocol_load` send them.
pub fn line_protocol(hosts: &[Host], rows: &[Row]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(rows.len() * 300);
    for r in rows {
        s.push_str("cpu");
        for (k, v) in TAGS.iter().zip(&hosts[r.host].tags) {
            let _ = write!(s, ",{k}={v}");
        }
        for (i, (f, v)) in FIELDS.iter().zip(r.values).enumerate() {
            let _ = write!(s, "{}{f}={v}", if i == 0 { ' ' } else { ',' });
        }
        let _ = writeln!(s, " {}", r.ts_secs);
    }
    s.into_bytes()
}

/// The information the generator put into each field value, in bytes per
/// sample: given the previous value (hundredths), the next is the previous
/// plus one of 2,001 equally likely steps, clamped to [0, 100] (clamping
/// merges the steps past a bound into one outcome). Timestamps are regular
/// and add nothing. No encoding of these values can average less.
pub fn entropy_floor_bytes_per_sample(rows: &[Row]) -> f64 {
    const STEPS: f64 = 2001.0;
    let bits_after = |prev: i64| -> f64 {
        let low = (1001 - prev).clamp(0, 2001) as f64; // steps landing on 0
        let high = (prev - 8999).clamp(0, 2001) as f64; // steps landing on 100
        let inside = STEPS - low - high;
        let term = |n: f64| if n > 0.0 { n / STEPS * (STEPS / n).log2() } else { 0.0 };
        inside / STEPS * STEPS.log2() + term(low) + term(high)
    };
    let table: Vec<f64> = (0..=10_000).map(bits_after).collect();
    let mut bits = 0.0;
    let (firsts, samples) = walk_steps(rows, |p, _| bits += table[p.clamp(0, 10_000) as usize]);
    (bits + first_value_bits(firsts)) / 8.0 / samples.max(1) as f64
}

/// Hands `step` every field's previous and next value (hundredths) along
/// each host's rows; returns how many rows were a host's first, and samples.
fn walk_steps(rows: &[Row], mut step: impl FnMut(i64, i64)) -> (usize, usize) {
    let mut last: std::collections::HashMap<usize, [i64; 10]> = std::collections::HashMap::new();
    let mut firsts = 0;
    for r in rows {
        let now: [i64; 10] = std::array::from_fn(|i| (r.values[i] * 100.0).round() as i64);
        match last.get(&r.host) {
            None => firsts += 1,
            Some(prev) => prev.iter().zip(&now).for_each(|(&p, &n)| step(p, n)),
        }
        last.insert(r.host, now);
    }
    (firsts, rows.len() * 10)
}

/// A series' first values: each uniform over 10,001 values.
fn first_value_bits(first_rows: usize) -> f64 {
    first_rows as f64 * 10.0 * 10_001f64.log2()
}

/// What the best coder of each value's step from the previous one, with no
/// context, needs in bytes per sample: the empirical entropy of the steps
/// (hundredths) pooled over every series and field, first values as in
/// [`entropy_floor_bytes_per_sample`]. The floor knows the previous value
/// (near a bound, steps past it land on the bound); a step coder does not,
/// so this is above the floor by what that knowledge is worth.
pub fn step_entropy_bytes_per_sample(rows: &[Row]) -> f64 {
    let mut counts: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
    let (firsts, samples) = walk_steps(rows, |p, n| *counts.entry(n - p).or_default() += 1);
    let steps: u64 = counts.values().sum();
    let step_bits: f64 = counts.values().map(|&c| c as f64 * (steps as f64 / c as f64).log2()).sum();
    (first_value_bits(firsts) + step_bits) / 8.0 / samples.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entropy_floor_is_about_log2_of_2001_bits_per_sample() {
        let r = rows(10, 0, 2000, 3);
        let floor = entropy_floor_bytes_per_sample(&r);
        // Away from the bounds every step is one of 2,001: 10.97 bits; clamping only lowers it.
        assert!(floor < 2001f64.log2() / 8.0 + 0.01 && floor > 1.2, "{floor}");
        // Coding steps without knowing the previous value costs more, and
        // at most the 2,001 steps' uniform cost (clamped steps add outcomes).
        let steps = step_entropy_bytes_per_sample(&r);
        assert!(steps > floor && steps < 2003f64.log2() / 8.0 + 0.01, "{steps} vs {floor}");
    }

    #[test]
    fn generation_is_deterministic_bounded_and_two_decimal() {
        let a = rows(5, 1_000, 50, 7);
        assert_eq!(a, rows(5, 1_000, 50, 7));
        assert_ne!(a, rows(5, 1_000, 50, 8));
        assert_eq!(a.len(), 250);
        for r in &a {
            for v in r.values {
                assert!((0.0..=100.0).contains(&v));
                assert_eq!((v * 100.0).round() / 100.0, v);
            }
        }
        assert_eq!(hosts(3, 1)[2].tags[0], "host_2");
    }
}
