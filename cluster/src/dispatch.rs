//! Where a pinned shard's query fragments run: on long-running queriers,
//! on the query function (AWS Lambda), or both — the cost model of
//! docs/architecture.md ("Query dispatch") as a pure function, so it is
//! tested without a network.
//!
//! - **Cache locality.** Each time segment goes to the querier with the
//!   highest rendezvous score for (group, shard, segment start): the same
//!   segment lands on the same querier query after query, so each querier's
//!   part cache holds a stable slice of the data, and a querier joining or
//!   leaving moves only the segments it wins or held.
//! - **Size.** The shard's estimated bytes (catalog statistics) decide
//!   whether the query function is worth its start-up: never, above a
//!   threshold, or always ([`LambdaWhen`]).
//! - **Parallelism.** Sent to the function, every segment is an invocation
//!   of its own, largest first, while the concurrency cap has room; the
//!   rest stay on their queriers.

use std::str::FromStr;

use canopy_querier::SegmentWork;

/// When the root sends fragments to the query function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaWhen {
    /// Queriers only.
    Never,
    /// When a shard's estimated bytes exceed this many.
    Over(u64),
    /// Every fragment that reads parts.
    Always,
}

impl LambdaWhen {
    /// True if a shard estimated at `bytes` goes to the function.
    pub fn admits(self, bytes: u64) -> bool {
        match self {
            LambdaWhen::Never => false,
            LambdaWhen::Over(n) => bytes > n,
            LambdaWhen::Always => bytes > 0,
        }
    }
}

impl FromStr for LambdaWhen {
    type Err = String;

    /// `never`, `always`, or `over:BYTES`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(LambdaWhen::Never),
            "always" => Ok(LambdaWhen::Always),
            _ => s
                .strip_prefix("over:")
                .and_then(|n| n.parse().ok())
                .map(LambdaWhen::Over)
                .ok_or_else(|| format!("{s:?}: expected never, always or over:BYTES (e.g. over:268435456)")),
        }
    }
}

/// One fragment of a shard: where it runs and the segments it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Sent to the query function (else run by `querier`).
    pub lambda: bool,
    /// The querier (index into the sorted querier list) that runs it, or
    /// runs it when the function fails.
    pub querier: usize,
    /// `[begin, end)` of its segments.
    pub windows: Vec<(i64, i64)>,
    /// Its parts; empty means every part of the pinned version.
    pub part_paths: Vec<String>,
}

/// Rendezvous score of a key on a querier: higher is preferred.
fn score(key: &[u8], querier: &str) -> u64 {
    let mut k = Vec::with_capacity(key.len() + querier.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k.extend_from_slice(querier.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&k)
}

/// The querier (index into `queriers`, non-empty) that `key` belongs to.
pub fn owner_of(key: &[u8], queriers: &[String]) -> usize {
    (0..queriers.len()).max_by_key(|&i| (score(key, &queriers[i]), std::cmp::Reverse(i))).expect("at least one querier")
}

/// The rendezvous key of a shard's segment starting at `start`.
fn segment_key(group: &str, shard: u32, start: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 13);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.extend_from_slice(&shard.to_le_bytes());
    k.extend_from_slice(&start.to_le_bytes());
    k
}

/// The rendezvous key of a shard read whole.
pub fn shard_key(group: &str, shard: u32) -> Vec<u8> {
    segment_key(group, shard, i64::MIN)
}

/// Plans a shard's fragments. `segments` are its time segments (`None`:
/// read whole); `queriers` the sorted querier addresses (non-empty);
/// `to_lambda` is called once per segment the function should take,
/// largest first, and says whether the concurrency cap still has room.
pub fn plan_shard(
    group: &str,
    shard: u32,
    segments: Option<Vec<SegmentWork>>,
    queriers: &[String],
    when: LambdaWhen,
    mut to_lambda: impl FnMut() -> bool,
) -> Vec<Planned> {
    let whole = owner_of(&shard_key(group, shard), queriers);
    let Some(mut segments) = segments.filter(|s| !s.is_empty()) else {
        return vec![Planned { lambda: false, querier: whole, windows: Vec::new(), part_paths: Vec::new() }];
    };
    let estimate: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut out = Vec::new();
    if when.admits(estimate) {
        // Largest first, so a cap that runs out leaves the small ones.
        segments.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.window.cmp(&b.window)));
        let mut rest = Vec::new();
        for s in segments {
            if s.bytes > 0 && to_lambda() {
                let querier = owner_of(&segment_key(group, shard, s.window.0), queriers);
                out.push(Planned { lambda: true, querier, windows: vec![s.window], part_paths: s.part_paths });
            } else {
                rest.push(s);
            }
        }
        rest.sort_by_key(|s| s.window);
        segments = rest;
    }
    let mut per_querier: Vec<Option<Planned>> = vec![None; queriers.len()];
    for s in segments {
        let q = owner_of(&segment_key(group, shard, s.window.0), queriers);
        let p = per_querier[q].get_or_insert_with(|| Planned { lambda: false, querier: q, windows: Vec::new(), part_paths: Vec::new() });
        p.windows.push(s.window);
        p.part_paths.extend(s.part_paths);
    }
    out.extend(per_querier.into_iter().flatten());
    if out.len() == 1 {
        // One fragment reads everything: "every part" says it in no bytes.
        out[0].part_paths.clear();
    }
    out
}

/// Which fragment each memtable point goes with: the one whose windows hold
/// its timestamp. A point outside every window collides with no part, so the
/// last fragment takes it. Windows never overlap, so a binary search finds
/// the one (a querier's fragment may hold hundreds of segments).
pub struct RowRouter {
    /// `(begin, end, fragment)`, sorted.
    windows: Vec<(i64, i64, usize)>,
    last: usize,
}

impl RowRouter {
    /// The router of a shard's planned fragments.
    pub fn new(fragments: &[Planned]) -> RowRouter {
        let mut windows: Vec<(i64, i64, usize)> =
            fragments.iter().enumerate().flat_map(|(i, f)| f.windows.iter().map(move |w| (w.0, w.1, i))).collect();
        windows.sort_unstable();
        RowRouter { windows, last: fragments.len().saturating_sub(1) }
    }

    /// The fragment of a point at `ts`.
    pub fn fragment_of(&self, ts: i64) -> usize {
        let i = self.windows.partition_point(|w| w.1 <= ts);
        match self.windows.get(i) {
            Some(&(begin, _, f)) if begin <= ts => f,
            _ => self.last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn segments(n: usize, bytes: u64) -> Vec<SegmentWork> {
        (0..n as i64)
            .map(|i| SegmentWork {
                window: (i * HOUR, (i + 1) * HOUR),
                part_paths: vec![format!("p{i}a"), format!("p{i}b")],
                bytes: bytes * (i as u64 + 1),
                requests: 4,
            })
            .collect()
    }

    fn queriers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.1.{i}:17913")).collect()
    }

    /// Which querier each segment start went to.
    fn placement(p: &[Planned]) -> std::collections::BTreeMap<i64, String> {
        let qs = queriers(8);
        p.iter().flat_map(|f| f.windows.iter().map(|w| (w.0, qs[f.querier].clone()))).collect()
    }

    #[test]
    fn lambda_when_parses_and_admits_by_size() {
        assert_eq!("never".parse(), Ok(LambdaWhen::Never));
        assert_eq!("always".parse(), Ok(LambdaWhen::Always));
        assert_eq!("over:1000".parse(), Ok(LambdaWhen::Over(1000)));
        let err = "sometimes".parse::<LambdaWhen>().unwrap_err();
        assert!(err.contains("over:BYTES"), "{err}");
        assert!(!LambdaWhen::Over(1000).admits(1000) && LambdaWhen::Over(1000).admits(1001));
        assert!(!LambdaWhen::Always.admits(0), "nothing to read, nothing to invoke");
        assert!(!LambdaWhen::Never.admits(u64::MAX));
    }

    #[test]
    fn every_segment_is_read_once_and_segments_stay_on_their_querier() {
        let qs = queriers(3);
        let a = plan_shard("g", 7, Some(segments(24, 100)), &qs, LambdaWhen::Never, || true);
        assert!(a.len() > 1 && a.len() <= 3, "one fragment per querier: {}", a.len());
        let mut paths: Vec<&String> = a.iter().flat_map(|f| &f.part_paths).collect();
        paths.sort();
        assert_eq!(paths.len(), 48);
        paths.dedup();
        assert_eq!(paths.len(), 48, "no part read twice");
        assert!(a.iter().all(|f| !f.lambda));
        // The same query again: the same placement (warm caches).
        assert_eq!(plan_shard("g", 7, Some(segments(24, 100)), &qs, LambdaWhen::Never, || true), a);
        // A fourth querier takes about a quarter; no other segment moves.
        let before = placement(&a);
        let after = placement(&plan_shard("g", 7, Some(segments(24, 100)), &queriers(4), LambdaWhen::Never, || true));
        let moved: Vec<i64> = before.keys().filter(|k| before[*k] != after[*k]).copied().collect();
        assert!(moved.iter().all(|k| after[k] == queriers(4)[3]), "only moves to the newcomer");
        assert!((1..=12).contains(&moved.len()), "{} of 24 moved", moved.len());
    }

    #[test]
    fn the_function_takes_the_largest_segments_while_the_cap_has_room() {
        let qs = queriers(2);
        let mut room = 3;
        let a = plan_shard("g", 1, Some(segments(5, 100)), &qs, LambdaWhen::Always, || {
            room -= 1;
            room >= 0
        });
        let lambda: Vec<&Planned> = a.iter().filter(|f| f.lambda).collect();
        assert_eq!(lambda.len(), 3, "one invocation per segment, up to the cap");
        let mut starts: Vec<i64> = lambda.iter().map(|f| f.windows[0].0).collect();
        starts.sort();
        assert_eq!(starts, vec![2 * HOUR, 3 * HOUR, 4 * HOUR], "the largest segments");
        let on_queriers: usize = a.iter().filter(|f| !f.lambda).map(|f| f.windows.len()).sum();
        assert_eq!(on_queriers, 2);
        assert!(a.iter().all(|f| !f.part_paths.is_empty()), "split: every fragment names its parts");
        // Under the threshold, the queriers keep it all.
        let small = plan_shard("g", 1, Some(segments(5, 100)), &qs, LambdaWhen::Over(1_000_000), || true);
        assert!(small.iter().all(|f| !f.lambda));
    }

    #[test]
    fn a_shard_read_whole_or_by_one_querier_names_no_parts() {
        let one = plan_shard("g", 1, Some(segments(5, 100)), &queriers(1), LambdaWhen::Never, || true);
        assert_eq!(one.len(), 1);
        assert!(one[0].part_paths.is_empty() && one[0].windows.len() == 5);
        let whole = plan_shard("g", 1, None, &queriers(3), LambdaWhen::Always, || true);
        assert_eq!(whole.len(), 1);
        assert!(!whole[0].lambda);
        assert_eq!(whole[0].querier, owner_of(&shard_key("g", 1), &queriers(3)));
    }

    #[test]
    fn points_follow_their_segment() {
        // Gaps between segments: every other hour holds parts.
        let spaced: Vec<SegmentWork> = segments(12, 100).into_iter().step_by(2).collect();
        let a = plan_shard("g", 1, Some(spaced), &queriers(3), LambdaWhen::Never, || true);
        let router = RowRouter::new(&a);
        for (f, fragment) in a.iter().enumerate() {
            for w in &fragment.windows {
                for ts in [w.0, w.0 + 5, w.1 - 1] {
                    assert_eq!(router.fragment_of(ts), f, "{ts} in {w:?}");
                }
            }
        }
        for outside in [-5, HOUR + 5, 100 * HOUR] {
            assert_eq!(router.fragment_of(outside), a.len() - 1, "{outside}: outside every window, the last fragment");
        }
    }

    #[test]
    fn a_shard_whose_one_segment_goes_to_the_function_names_no_parts() {
        let a = plan_shard("g", 1, Some(segments(1, 100)), &queriers(2), LambdaWhen::Always, || true);
        assert_eq!(a.len(), 1);
        assert!(a[0].lambda);
        assert!(a[0].part_paths.is_empty(), "one fragment holding every segment reads every part");
        assert_eq!(a[0].windows, vec![(0, HOUR)]);
    }
}
