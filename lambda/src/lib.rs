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

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use canopy_api::cluster::v1::ExecuteShardRequest;
use canopy_cluster::CatalogCache;
use canopy_querier::{CacheConfig, CachedStore, Querier, QuerierConfig};
use canopy_storage::CatalogStore;
use object_store::ObjectStore;
use prost::Message;
use serde::{Deserialize, Serialize};

/// An invocation: one fragment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Invocation {
    /// A protobuf `canopy.cluster.v1.ExecuteShardRequest`, base64.
    pub request: String,
}

/// The answer: what a querier would have answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    /// A protobuf `canopy.cluster.v1.ExecuteShardResponse`, base64.
    pub response: String,
}

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
        let bytes = B64.decode(inv.request.as_bytes()).map_err(|e| format!("request: not base64: {e}"))?;
        let req = ExecuteShardRequest::decode(bytes.as_slice()).map_err(|e| format!("request: not an ExecuteShardRequest: {e}"))?;
        let resp = canopy_cluster::execute_fragment(&self.querier, &self.catalogs, &req).await.map_err(|e| e.to_string())?;
        Ok(Answer { response: B64.encode(resp.encode_to_vec()) })
    }

    /// The part cache's counters (hits by tier, misses).
    pub fn cache_counters(&self) -> Arc<canopy_querier::CacheCounters> {
        self.cache.counters()
    }
}

/// Encodes a fragment as an invocation (what the root's dispatcher sends).
pub fn invocation(req: &ExecuteShardRequest) -> Invocation {
    Invocation { request: B64.encode(req.encode_to_vec()) }
}

/// Decodes an answer into what a querier returns.
pub fn response(a: &Answer) -> Result<canopy_api::cluster::v1::ExecuteShardResponse, String> {
    let bytes = B64.decode(a.response.as_bytes()).map_err(|e| format!("response: not base64: {e}"))?;
    canopy_api::cluster::v1::ExecuteShardResponse::decode(bytes.as_slice()).map_err(|e| format!("response: {e}"))
}
