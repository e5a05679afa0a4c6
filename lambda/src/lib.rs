//! Canopy's query function for AWS Lambda: a thin shell over the querier.
//! An invocation carries one query fragment exactly as the root sends it to
//! a querier over gRPC (an `ExecuteShardRequest`: the compiled plan, the
//! pinned catalog version, the parts of its time window and the owner's
//! memtable rows) and gets back what a querier answers (the partial result
//! and its cost), both as base64 protobuf in JSON. The fragment runs through
//! [`canopy_cluster::execute_fragment`], the querier's own code path, over a
//! part cache whose disk tier lives in the function's `/tmp` (kept while the
//! execution environment stays warm).

use std::sync::Arc;

use canopy_cluster::CatalogCache;
pub use canopy_cluster::{Answer, Invocation};
use canopy_querier::{CacheConfig, CachedStore, Querier, QuerierConfig};
use canopy_storage::CatalogStore;
use object_store::ObjectStore;

/// The function's state, built once per execution environment.
pub struct Function {
    querier: Querier,
    catalogs: CatalogCache,
    cache: Arc<CachedStore>,
}

impl Function {
    /// A function reading `store` through a part cache configured by `cache`.
    pub async fn new(store: Arc<dyn ObjectStore>, cache: &CacheConfig) -> std::io::Result<Function> {
        let cached = Arc::new(CachedStore::open(store.clone(), cache).await?);
        Ok(Function {
            querier: Querier::new(QuerierConfig::default(), cached.clone()),
            catalogs: CatalogCache::new(CatalogStore::new(store)),
            cache: cached,
        })
    }

    /// Executes one invocation. A malformed one or a failed fragment is an
    /// error naming the problem (the caller falls back to a querier).
    pub async fn handle(&self, inv: Invocation) -> Result<Answer, String> {
        let req = inv.decode()?;
        let resp = canopy_cluster::execute_fragment(&self.querier, &self.catalogs, &req).await.map_err(|e| e.to_string())?;
        Ok(Answer::of(&resp))
    }

    /// The part cache's counters (hits by tier, misses).
    pub fn cache_counters(&self) -> Arc<canopy_querier::CacheCounters> {
        self.cache.counters()
    }
}
