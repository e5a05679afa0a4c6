//! Which shards to flush, and in what order.
//!
//! A shard is due when a flush of it failed and left frozen memtables, when
//! its active memtable reached the per-shard cap (`--flush-bytes`, which
//! bounds a part's size and a WAL's replay) or when its oldest point reached
//! the flush interval. Beyond those, the memory budget drives flushing: when
//! memtables hold the budget's flush threshold, the largest active memtables
//! (the oldest first among equals) are flushed until what stays active is at
//! most half that threshold — the most memory freed for the fewest parts.

use std::time::Duration;

/// One shard as the policy sees it.
#[derive(Debug, Clone)]
pub(crate) struct ShardLoad {
    /// Bytes of its active memtable.
    pub(crate) active_bytes: usize,
    /// Age of its active memtable's first insert (zero when empty).
    pub(crate) active_age: Duration,
    /// Frozen memtables wait for a flush (a failed one, to retry), or the
    /// WAL volume is full (a flush frees it).
    pub(crate) frozen: bool,
    /// A flush of it is running now.
    pub(crate) flushing: bool,
}

/// The flush settings and the budget's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushLimits {
    /// A shard's active memtable is flushed at this size.
    pub(crate) shard_bytes: usize,
    /// ... or at this age.
    pub(crate) interval: Duration,
    /// Memtables in total (active and frozen) now.
    pub(crate) memtables: usize,
    /// Past this, the largest shards are flushed (see the module doc).
    pub(crate) threshold: usize,
    /// The WAL volume (all shards' WALs) was found full: every shard
    /// holding points is due, since each one's flush frees some of it.
    pub(crate) wal_volume_full: bool,
}

/// Indices of the shards to flush now, most urgent first: those due, then
/// those the budget picks, largest first.
pub(crate) fn shards_to_flush(shards: &[ShardLoad], limits: FlushLimits) -> Vec<usize> {
    let has_points = |s: &ShardLoad| s.active_bytes > 0;
    let due = |s: &ShardLoad| {
        s.frozen || (has_points(s) && (limits.wal_volume_full || s.active_bytes >= limits.shard_bytes || s.active_age >= limits.interval))
    };
    let mut picked: Vec<usize> = (0..shards.len()).filter(|&i| !shards[i].flushing && due(&shards[i])).collect();
    if limits.memtables >= limits.threshold {
        let mut rest: Vec<usize> =
            (0..shards.len()).filter(|&i| !shards[i].flushing && !due(&shards[i]) && has_points(&shards[i])).collect();
        rest.sort_by(|&a, &b| shards[b].active_bytes.cmp(&shards[a].active_bytes).then(shards[b].active_age.cmp(&shards[a].active_age)));
        // Active bytes that no running or picked flush will free.
        let mut staying: usize = rest.iter().map(|&i| shards[i].active_bytes).sum();
        for i in rest {
            if staying <= limits.threshold / 2 {
                break;
            }
            staying -= shards[i].active_bytes;
            picked.push(i);
        }
    }
    picked
}

/// How long a shard waits after its `failures`-th failed flush in a row
/// before the next try: 500 ms doubling up to 30 s, less up to a quarter at
/// random so that shards failing together (an object store down) do not all
/// retry at the same instant.
pub(crate) fn retry_delay(failures: u32, random: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(30));
    base - base / 4 * (random % 1024) / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(active_bytes: usize, age_secs: u64) -> ShardLoad {
        ShardLoad { active_bytes, active_age: Duration::from_secs(age_secs), frozen: false, flushing: false }
    }

    fn limits(memtables: usize) -> FlushLimits {
        FlushLimits { shard_bytes: 1000, interval: Duration::from_secs(60), memtables, threshold: 800, wal_volume_full: false }
    }

    #[test]
    fn below_the_threshold_only_size_age_and_retries_flush() {
        let mut shards = vec![load(1000, 1), load(10, 61), load(500, 1), load(0, 100), load(0, 0)];
        shards[4].frozen = true;
        assert_eq!(shards_to_flush(&shards, limits(799)), vec![0, 1, 4]);
    }

    #[test]
    fn past_the_threshold_the_largest_go_first_until_half_of_it_stays() {
        // 700 active among shards not due; at most 400 may stay.
        let shards = vec![load(100, 5), load(300, 1), load(250, 2), load(50, 9)];
        assert_eq!(shards_to_flush(&shards, limits(800)), vec![1]);
        // Equal sizes: the oldest first.
        let shards = vec![load(300, 1), load(300, 3), load(300, 2)];
        assert_eq!(shards_to_flush(&shards, limits(900)), vec![1, 2]);
    }

    #[test]
    fn retries_back_off_to_thirty_seconds_with_jitter() {
        assert_eq!(retry_delay(1, 0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, 0), Duration::from_secs(1));
        assert_eq!(retry_delay(20, 0), Duration::from_secs(30));
        let jittered = retry_delay(20, 1023);
        assert!(jittered < Duration::from_secs(30) && jittered > Duration::from_millis(22_500), "{jittered:?}");
    }

    #[test]
    fn a_full_wal_volume_makes_every_shard_with_points_due() {
        let shards = vec![load(10, 1), load(0, 0), load(20, 2)];
        assert_eq!(shards_to_flush(&shards, FlushLimits { wal_volume_full: true, ..limits(0) }), vec![0, 2]);
    }

    #[test]
    fn shards_being_flushed_are_not_picked_again() {
        let mut shards = vec![load(5000, 100), load(600, 1)];
        shards[0].flushing = true;
        shards[1].flushing = true;
        assert!(shards_to_flush(&shards, limits(10_000)).is_empty());
    }
}
