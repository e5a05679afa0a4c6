//! The internal gRPC service of an ingester: writes routed by liaisons, and
//! shard snapshots (catalog version + memtable rows above its watermark)
//! for queries.

use std::sync::Arc;

use canopy_api::cluster::v1::ingester_service_server::IngesterService;
use canopy_api::cluster::v1::{
    IngestRequest, IngestResponse, IngesterFlushRequest, IngesterFlushResponse, SnapshotRequest, SnapshotResponse,
};
use canopy_ingester::Ingester;
use canopy_liaison::ApiError;
use tonic::{Request, Response, Status};

use crate::fragment::compile_fragment;
use crate::metrics::RoleMetrics;

/// Serves [`IngesterService`] over an ingester.
#[derive(Clone)]
pub struct IngesterRpc {
    pub ingester: Arc<Ingester>,
    pub metrics: Arc<RoleMetrics>,
}

#[tonic::async_trait]
impl IngesterService for IngesterRpc {
    async fn ingest(&self, req: Request<IngestRequest>) -> Result<Response<IngestResponse>, Status> {
        self.metrics.requests.inc();
        match self.ingester.write_encoded(req.into_inner().batch).await {
            Ok(points) => {
                self.metrics.points.add(points as u64);
                Ok(Response::new(IngestResponse { points: points as u32 }))
            }
            Err(e) => {
                self.metrics.errors.inc();
                Err(ApiError::from(e).into())
            }
        }
    }

    async fn snapshot(&self, req: Request<SnapshotRequest>) -> Result<Response<SnapshotResponse>, Status> {
        self.metrics.queries.inc();
        let req = req.into_inner();
        let plan = compile_fragment(req.fragment.as_ref().ok_or_else(|| Status::invalid_argument("fragment: required"))?)?;
        if req.accept_last_values
            && let Some(answer) = self.ingester.last_values(&plan, req.shard).await.map_err(ApiError::from)?
        {
            let last_values = canopy_model::wire::encode_partial(&answer);
            return Ok(Response::new(SnapshotResponse { catalog_version: 0, epoch: 0, rows: Vec::new(), last_values }));
        }
        let snap = self.ingester.snapshot_for(&plan, req.shard).await.map_err(ApiError::from)?;
        Ok(Response::new(SnapshotResponse {
            catalog_version: snap.catalog.version,
            epoch: snap.catalog.epoch,
            rows: canopy_model::wire::encode_rows(&snap.rows),
            last_values: Vec::new(),
        }))
    }

    async fn flush(&self, _req: Request<IngesterFlushRequest>) -> Result<Response<IngesterFlushResponse>, Status> {
        let parts = self.ingester.flush_all().await.map_err(ApiError::from)?;
        Ok(Response::new(IngesterFlushResponse { parts: parts as u32 }))
    }
}
