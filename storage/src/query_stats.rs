//! What one query cost, gathered where the I/O happens: the counting store
//! adds its requests and bytes, the part cache its hits and misses, the
//! querier the parts it scanned and skipped — each to the query running on
//! the current task, if it asked to be measured ([`measure`]). Counting
//! through a task-local keeps the cost out of every signature between the
//! gateway and the object store, and a query's concurrent shards (futures
//! of one task) all land in its one tally.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers in a [`QueryCost`].
const COUNTS: usize = 9;

/// The tally of one query, added to from anywhere on its task.
#[derive(Debug, Default)]
pub struct QueryStats {
    counts: [AtomicU64; COUNTS],
}

/// A snapshot of [`QueryStats`]: the cost of a query (or a fragment of one).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueryCost {
    /// Object-store requests and the bytes they moved.
    pub requests: u64,
    pub bytes: u64,
    /// Part ranges served by the cache's memory and disk tiers, or fetched.
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    /// Parts read from, and parts ruled out without reading their data.
    pub parts_scanned: u64,
    pub parts_skipped: u64,
    /// Fragments the query function on Lambda executed, and fragments sent
    /// there that a querier executed instead.
    pub lambda_invocations: u64,
    pub lambda_fallbacks: u64,
}

impl QueryCost {
    fn to_array(self) -> [u64; COUNTS] {
        [
            self.requests,
            self.bytes,
            self.memory_hits,
            self.disk_hits,
            self.misses,
            self.parts_scanned,
            self.parts_skipped,
            self.lambda_invocations,
            self.lambda_fallbacks,
        ]
    }

    fn from_array(a: [u64; COUNTS]) -> QueryCost {
        let [requests, bytes, memory_hits, disk_hits, misses, parts_scanned, parts_skipped, lambda_invocations, lambda_fallbacks] = a;
        QueryCost { requests, bytes, memory_hits, disk_hits, misses, parts_scanned, parts_skipped, lambda_invocations, lambda_fallbacks }
    }
}

impl From<QueryCost> for canopy_api::v1::QueryStats {
    fn from(c: QueryCost) -> Self {
        canopy_api::v1::QueryStats {
            object_store_requests: c.requests,
            object_store_bytes: c.bytes,
            cache_memory_hits: c.memory_hits,
            cache_disk_hits: c.disk_hits,
            cache_misses: c.misses,
            parts_scanned: c.parts_scanned,
            parts_skipped: c.parts_skipped,
            lambda_invocations: c.lambda_invocations,
            lambda_fallbacks: c.lambda_fallbacks,
        }
    }
}

impl From<&canopy_api::v1::QueryStats> for QueryCost {
    fn from(s: &canopy_api::v1::QueryStats) -> Self {
        QueryCost {
            requests: s.object_store_requests,
            bytes: s.object_store_bytes,
            memory_hits: s.cache_memory_hits,
            disk_hits: s.cache_disk_hits,
            misses: s.cache_misses,
            parts_scanned: s.parts_scanned,
            parts_skipped: s.parts_skipped,
            lambda_invocations: s.lambda_invocations,
            lambda_fallbacks: s.lambda_fallbacks,
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<QueryStats>;
}

/// Adds `cost` to the query measured on this task, if any.
pub fn record(cost: QueryCost) {
    let _ = CURRENT.try_with(|s| {
        for (c, v) in s.counts.iter().zip(cost.to_array()) {
            if v > 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        }
    });
}

/// Runs `f` with a fresh tally and returns its output and what it cost
/// (everything recorded on this task while it ran).
pub async fn measure<F: Future>(f: F) -> (F::Output, QueryCost) {
    let stats = Arc::new(QueryStats::default());
    let out = CURRENT.scope(stats.clone(), f).await;
    let cost = QueryCost::from_array(std::array::from_fn(|i| stats.counts[i].load(Ordering::Relaxed)));
    (out, cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn costs_land_in_the_query_measured_on_the_task_and_nowhere_else() {
        record(QueryCost { requests: 5, ..Default::default() });
        let ((), cost) = measure(async {
            record(QueryCost { requests: 1, bytes: 10, ..Default::default() });
            // Concurrent futures of the task add to the same tally.
            futures::future::join(async { record(QueryCost { parts_scanned: 2, ..Default::default() }) }, async {
                record(QueryCost { parts_skipped: 3, misses: 1, ..Default::default() })
            })
            .await;
        })
        .await;
        assert_eq!(cost, QueryCost { requests: 1, bytes: 10, misses: 1, parts_scanned: 2, parts_skipped: 3, ..Default::default() });
        let ((), other) = measure(async {}).await;
        assert_eq!(other, QueryCost::default());
    }
}
