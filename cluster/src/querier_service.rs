//! The internal gRPC service of a querier: one shard of a query over the
//! parts of a pinned catalog version plus the owner's memtable rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use canopy_api::cluster::v1::querier_service_server::QuerierService;
use canopy_api::cluster::v1::{ExecuteShardRequest, ExecuteShardResponse};
use canopy_liaison::ApiError;
use canopy_querier::Querier;
use canopy_storage::{CatalogState, CatalogStore};
use tonic::{Request, Response, Status};

use crate::fragment::compile_fragment;
use crate::metrics::RoleMetrics;

/// Catalog versions kept in memory; versions are immutable, so entries
/// never go stale, and the bound keeps the map small.
const CATALOGS_CACHED_MAX: usize = 1024;

/// Serves [`QuerierService`].
pub struct QuerierRpc {
    pub querier: Arc<Querier>,
    pub catalogs: CatalogStore,
    pub metrics: Arc<RoleMetrics>,
    cache: Mutex<HashMap<(String, u32, u64), Arc<CatalogState>>>,
}

impl QuerierRpc {
    /// A service over a querier and the catalogs of the same object store.
    pub fn new(querier: Arc<Querier>, catalogs: CatalogStore, metrics: Arc<RoleMetrics>) -> QuerierRpc {
        QuerierRpc { querier, catalogs, metrics, cache: Mutex::new(HashMap::new()) }
    }

    async fn catalog(&self, group: &str, shard: u32, version: u64) -> Result<Arc<CatalogState>, ApiError> {
        let key = (group.to_string(), shard, version);
        if let Some(c) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(if version == 0 {
            CatalogState::empty(group, shard)
        } else {
            self.catalogs.load_version(group, shard, version).await?
        });
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CATALOGS_CACHED_MAX {
            cache.clear();
        }
        cache.insert(key, c.clone());
        Ok(c)
    }
}

#[tonic::async_trait]
impl QuerierService for QuerierRpc {
    async fn execute_shard(&self, req: Request<ExecuteShardRequest>) -> Result<Response<ExecuteShardResponse>, Status> {
        self.metrics.queries.inc();
        let req = req.into_inner();
        let run = async {
            let plan = compile_fragment(req.fragment.as_ref().ok_or_else(|| ApiError::invalid("fragment", "required"))?)?;
            let rows = canopy_model::wire::decode_rows(&req.mem_rows).ok_or_else(|| ApiError::invalid("mem_rows", "not valid rows"))?;
            let catalog = self.catalog(&plan.schema.group.name, req.shard, req.catalog_version).await?;
            let partial = self.querier.execute_shard(&plan, &catalog, rows).await?;
            Ok::<_, ApiError>(canopy_model::wire::encode_partial(&partial))
        };
        match run.await {
            Ok(partial) => Ok(Response::new(ExecuteShardResponse { partial })),
            Err(e) => {
                self.metrics.query_errors.inc();
                Err(e.into())
            }
        }
    }
}
