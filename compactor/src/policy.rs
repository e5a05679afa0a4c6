//! Which parts of a segment to merge next. Pure: no I/O, so it is tested
//! (and could be simulated) on its own.
//!
//! Size-tiered within one time segment (segments are never merged together):
//! a part's tier is `floor(log_fanout(bytes / tier_base_bytes))`.
//! 1. If `fanout` consecutive parts (in commit order) share the lowest tier
//!    that has such a run, merge that run.
//! 2. Otherwise, if the segment has more than `parts_max` parts, merge the
//!    consecutive window of `count - parts_max + 1` parts with the fewest bytes.
//!
//! Only consecutive parts are merged: the output takes the place of the last
//! input, so for points equal in (series, timestamp, version) the newer part
//! still wins, exactly as before the merge.

use std::ops::Range;

use canopy_storage::PartMeta;

/// Policy settings.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub fanout: usize,
    pub tier_base_bytes: u64,
    /// Most parts a segment keeps once compaction has caught up.
    pub parts_max: usize,
    /// Most parts merged at once (bounds the merge's memory: one decoded
    /// record batch per input).
    pub inputs_max: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { fanout: 4, tier_base_bytes: 1 << 20, parts_max: 4, inputs_max: 16 }
    }
}

fn tier(bytes: u64, cfg: &PolicyConfig) -> u32 {
    let mut t = 0;
    let mut limit = cfg.tier_base_bytes.max(1);
    while bytes >= limit.saturating_mul(cfg.fanout as u64) && t < 64 {
        limit = limit.saturating_mul(cfg.fanout as u64);
        t += 1;
    }
    t
}

/// Picks a consecutive range of a segment's parts (given in commit order) to
/// merge, or `None` if the segment is compacted enough.
pub fn pick_inputs(parts: &[&PartMeta], cfg: &PolicyConfig) -> Option<Range<usize>> {
    debug_assert!(cfg.fanout >= 2 && cfg.parts_max >= 1 && cfg.inputs_max >= 2);
    if parts.len() < 2 {
        return None;
    }
    let tiers: Vec<u32> = parts.iter().map(|p| tier(p.bytes, cfg)).collect();
    let mut best: Option<(u32, Range<usize>)> = None;
    let mut start = 0;
    for i in 1..=tiers.len() {
        if i == tiers.len() || tiers[i] != tiers[start] {
            let len = i - start;
            if len >= cfg.fanout && best.as_ref().is_none_or(|(t, _)| tiers[start] < *t) {
                best = Some((tiers[start], start..start + len.min(cfg.inputs_max)));
            }
            start = i;
        }
    }
    if let Some((_, r)) = best {
        return Some(r);
    }
    if parts.len() > cfg.parts_max {
        let width = (parts.len() - cfg.parts_max + 1).min(cfg.inputs_max);
        let cheapest =
            (0..=parts.len() - width).min_by_key(|&s| parts[s..s + width].iter().map(|p| p.bytes).sum::<u64>()).expect("width <= len");
        return Some(cheapest..cheapest + width);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn part(bytes: u64) -> PartMeta {
        PartMeta {
            id: 0,
            path: String::new(),
            segment_start: 0,
            segment_end: 1,
            bytes,
            footer_bytes: 0,
            rows: 0,
            min_ts: 0,
            max_ts: 0,
            max_wal_seq: 0,
            level: 0,
            measures: BTreeMap::new(),
        }
    }

    fn pick(sizes: &[u64]) -> Option<Range<usize>> {
        let parts: Vec<PartMeta> = sizes.iter().map(|&b| part(b)).collect();
        let refs: Vec<&PartMeta> = parts.iter().collect();
        pick_inputs(&refs, &PolicyConfig::default())
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn merges_a_run_of_small_parts_of_one_tier_first() {
        // Tier 1 run of 4 and tier 0 run of 4: the lower tier goes first.
        assert_eq!(pick(&[5 * MB, 5 * MB, 5 * MB, 5 * MB, 100, 200, 300, 400]), Some(4..8));
        assert_eq!(pick(&[5 * MB, 5 * MB, 5 * MB, 5 * MB]), Some(0..4));
    }

    #[test]
    fn caps_the_part_count_by_merging_the_cheapest_window() {
        // Tiers 2,0,1,0,2: no run of 4; 5 parts > 4, so a window of 2 merges.
        assert_eq!(pick(&[20 * MB, 100, 5 * MB, 200, 20 * MB]), Some(1..3));
        assert_eq!(pick(&[20 * MB, 100, 5 * MB, 20 * MB]), None, "4 parts are within parts_max");
        assert_eq!(pick(&[MB]), None);
    }

    #[test]
    fn merges_at_most_inputs_max_parts() {
        let r = pick(&[100; 40]).unwrap();
        assert_eq!(r, 0..16);
    }

    #[test]
    fn repeated_picks_converge_to_parts_max() {
        let cfg = PolicyConfig::default();
        let mut sizes: Vec<u64> = (0..37).map(|i| 1000 + i * 997 % 5000).collect();
        let mut rounds = 0;
        while let Some(r) = pick(&sizes) {
            let merged: u64 = sizes[r.clone()].iter().sum();
            sizes.splice(r, [merged]);
            rounds += 1;
            assert!(rounds < 100);
        }
        assert!(sizes.len() <= cfg.parts_max, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), (0..37).map(|i| 1000 + i * 997 % 5000).sum::<u64>());
    }
}
