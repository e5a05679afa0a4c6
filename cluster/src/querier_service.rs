//! The internal gRPC service of a querier: one shard of a query over the
//! parts of a pinned catalog version plus the owner's memtable rows.

use std::sync::Arc;

use canopy_api::cluster::v1::querier_service_server::QuerierService;
use canopy_api::cluster::v1::{ExecuteShardRequest, ExecuteShardResponse};
use canopy_liaison::ApiError;
use canopy_querier::Querier;
use canopy_storage::{CatalogState, CatalogStore};

use crate::catalog_cache::CatalogCache;
use tonic::{Request, Response, Status};

use crate::fragment::compile_fragment;
use crate::metrics::RoleMetrics;

/// Serves [`QuerierService`].
pub struct QuerierRpc {
    pub querier: Arc<Querier>,
    pub metrics: Arc<RoleMetrics>,
    catalogs: CatalogCache,
}

impl QuerierRpc {
    /// A service over a querier and the catalogs of the same object store.
    pub fn new(querier: Arc<Querier>, catalogs: CatalogStore, metrics: Arc<RoleMetrics>) -> QuerierRpc {
        QuerierRpc { querier, metrics, catalogs: CatalogCache::new(catalogs) }
    }
}

/// Executes one fragment of a shard's query — the querier's whole job,
/// shared by the gRPC service and the Lambda function so both answer alike:
/// compile the shipped plan, pin the catalog version (only the listed parts
/// when the shard is split), add the owner's memtable rows, and return the
/// partial result with what it cost.
pub async fn execute_fragment(
    querier: &Querier,
    catalogs: &CatalogCache,
    req: &ExecuteShardRequest,
) -> Result<ExecuteShardResponse, ApiError> {
    let run = async {
        let plan = compile_fragment(req.fragment.as_ref().ok_or_else(|| ApiError::invalid("fragment", "required"))?)?;
        let rows = canopy_model::wire::decode_rows(&req.mem_rows).ok_or_else(|| ApiError::invalid("mem_rows", "not valid rows"))?;
        let mut catalog = catalogs.get(&plan.schema.group.name, req.shard, req.catalog_version).await?;
        if !req.part_paths.is_empty() {
            // Some segments of a shard split over several queriers (a
            // querier's fragment may list thousands of parts: a set).
            let listed: std::collections::HashSet<&str> = req.part_paths.iter().map(String::as_str).collect();
            let mut only: CatalogState = (*catalog).clone();
            only.parts.retain(|p| listed.contains(p.path.as_str()));
            catalog = Arc::new(only);
        }
        let partial = querier.execute_shard(&plan, &catalog, rows).await?;
        Ok::<_, ApiError>(canopy_model::wire::encode_partial(&partial))
    };
    // The fragment's cost goes back with it, for the root's tally.
    let (r, cost) = canopy_storage::query_stats::measure(run).await;
    Ok(ExecuteShardResponse { partial: r?, stats: Some(cost.into()) })
}

#[tonic::async_trait]
impl QuerierService for QuerierRpc {
    async fn execute_shard(&self, req: Request<ExecuteShardRequest>) -> Result<Response<ExecuteShardResponse>, Status> {
        self.metrics.queries.inc();
        match execute_fragment(&self.querier, &self.catalogs, &req.into_inner()).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                self.metrics.query_errors.inc();
                Err(e.into())
            }
        }
    }
}
