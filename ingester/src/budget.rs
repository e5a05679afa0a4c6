//! One memory budget per ingester, covering everything ingest holds:
//! batches queued for the WAL writer, memtables (active and frozen), and
//! the encoded parts of flushes in flight.
//!
//! Writes reserve their share before they are queued and are refused
//! (`Overloaded`, i.e. 429 / RESOURCE_EXHAUSTED) when it would not fit;
//! flushes are never refused, since they are what frees memory. Memtables
//! past [`MemoryBudget::flush_threshold`] wake the flusher, which flushes
//! the largest shards first (see `flush_policy.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a charge pays for: the three parts of the budget.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Queued,
    Flushing,
}

/// The budget and what is charged against it now.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    max: usize,
    queued: AtomicUsize,
    memtables: AtomicUsize,
    flushing: AtomicUsize,
    /// Wakes the flusher when memtables cross the flush threshold.
    pub(crate) pressure: tokio::sync::Notify,
    /// An append found the WAL volume full. Every shard's WAL shares it, so
    /// the flusher then flushes every shard holding points.
    wal_full: std::sync::atomic::AtomicBool,
}

/// Bytes held against the budget until dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<MemoryBudget>,
    kind: Kind,
    bytes: usize,
}

impl Charge {
    /// Moves `bytes` of this charge (at most all of it) into a charge of
    /// its own, to be released separately.
    pub(crate) fn split_off(&mut self, bytes: usize) -> Charge {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Charge { budget: self.budget.clone(), kind: self.kind, bytes }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.counter(self.kind).fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl MemoryBudget {
    /// A budget of `max` bytes, nothing charged.
    pub(crate) fn new(max: usize) -> MemoryBudget {
        MemoryBudget {
            max,
            queued: AtomicUsize::new(0),
            memtables: AtomicUsize::new(0),
            flushing: AtomicUsize::new(0),
            pressure: tokio::sync::Notify::new(),
            wal_full: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Queued => &self.queued,
            Kind::Flushing => &self.flushing,
        }
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Bytes charged now, all parts together.
    pub(crate) fn used(&self) -> usize {
        self.queued.load(Ordering::Relaxed) + self.memtables() + self.flushing.load(Ordering::Relaxed)
    }

    /// Bytes held by memtables, active and frozen.
    pub(crate) fn memtables(&self) -> usize {
        self.memtables.load(Ordering::Relaxed)
    }

    /// Memtables holding this much start flushes of the largest shards:
    /// half the budget, leaving the other half to the memtables that keep
    /// filling while those flushes upload, and to queued batches.
    pub(crate) fn flush_threshold(&self) -> usize {
        self.max / 2
    }

    /// Reserves `bytes` for a write about to be queued, or refuses it with
    /// the reason when the budget cannot take it. A write larger than the
    /// whole budget is let through when nothing else is held, so it is
    /// never refused forever.
    pub(crate) fn reserve_write(self: &Arc<Self>, bytes: usize) -> Result<Charge, String> {
        let used = self.used();
        if used > 0 && used.saturating_add(bytes) > self.max {
            self.pressure.notify_one();
            return Err(format!(
                "ingest memory is full: {used} bytes held (queued writes, memtables, flushes) of the {}-byte limit \
                 (--memory-budget-bytes); flushes are behind, retry later",
                self.max
            ));
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        Ok(Charge { budget: self.clone(), kind: Kind::Queued, bytes })
    }

    /// Charges the encoded parts of a flush until they are uploaded; never
    /// refused (flushing is how memory is freed).
    pub(crate) fn charge_flush(self: &Arc<Self>, bytes: usize) -> Charge {
        self.flushing.fetch_add(bytes, Ordering::Relaxed);
        Charge { budget: self.clone(), kind: Kind::Flushing, bytes }
    }

    /// Reports a full WAL volume and wakes the flusher.
    pub(crate) fn wal_volume_full(&self) {
        self.wal_full.store(true, Ordering::Relaxed);
        self.pressure.notify_one();
    }

    /// Whether the WAL volume was reported full since the last call.
    pub(crate) fn take_wal_volume_full(&self) -> bool {
        self.wal_full.swap(false, Ordering::Relaxed)
    }

    /// Adds memtable bytes (inserted points, a replayed WAL) and wakes the
    /// flusher if memtables are past the flush threshold.
    pub(crate) fn add_memtable(&self, bytes: usize) {
        let now = self.memtables.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now >= self.flush_threshold() {
            self.pressure.notify_one();
        }
    }

    /// Releases memtable bytes (a flushed or dropped memtable).
    pub(crate) fn release_memtable(&self, bytes: usize) {
        // Saturating: a release never takes the count below zero, whatever
        // the order of concurrent adds and releases.
        let _ = self.memtables.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| Some(m.saturating_sub(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_past_the_budget_and_charges_release_on_drop() {
        let b = Arc::new(MemoryBudget::new(1000));
        let a = b.reserve_write(600).unwrap();
        assert!(b.reserve_write(500).unwrap_err().contains("600 bytes held (queued writes, memtables, flushes) of the 1000-byte limit"));
        b.add_memtable(300);
        assert_eq!(b.used(), 900);
        assert!(b.reserve_write(101).is_err());
        let c = b.reserve_write(100).unwrap();
        drop(a);
        drop(c);
        assert_eq!(b.used(), 300);
        b.release_memtable(300);
        // Nothing held: even a write larger than the budget gets through.
        let big = b.reserve_write(5000).unwrap();
        assert_eq!(b.used(), 5000);
        drop(big);
    }

    #[test]
    fn a_split_charge_releases_each_part_once() {
        let b = Arc::new(MemoryBudget::new(1000));
        let mut whole = b.reserve_write(600).unwrap();
        let part = whole.split_off(250);
        let too_much = whole.split_off(10_000);
        assert_eq!(b.used(), 600);
        drop(part);
        assert_eq!(b.used(), 350);
        drop(whole);
        assert_eq!(b.used(), 350, "nothing was left in it");
        drop(too_much);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn flushes_are_charged_even_past_the_budget() {
        let b = Arc::new(MemoryBudget::new(100));
        b.add_memtable(100);
        let f = b.charge_flush(50);
        assert_eq!(b.used(), 150);
        assert!(b.reserve_write(1).is_err());
        drop(f);
        b.release_memtable(1000);
        assert_eq!(b.used(), 0);
    }
}
