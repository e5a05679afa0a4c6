//! The seam between the gateway and the data: where writes go and where
//! shard-level query fragments run. Standalone wires the in-process
//! ingester and querier; cluster mode puts gRPC clients behind the same trait.

use std::sync::Arc;

use async_trait::async_trait;
use canopy_compactor::{Compactor, ShardReport};
use canopy_ingester::Ingester;
use canopy_model::{GroupSpec, MeasureSchema, PartialResult, Point, QueryPlan};
use canopy_querier::Querier;

use crate::ApiError;

/// Where validated writes go and where shard fragments of queries run.
#[async_trait]
pub trait DataPlane: Send + Sync + 'static {
    /// Durably writes validated points (each carries its shard).
    async fn write(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<(), ApiError>;
    /// Runs a query over one shard: a pinned catalog version plus the
    /// ingester's points above its WAL watermark.
    async fn query_shard(&self, plan: &QueryPlan, shard: u32) -> Result<PartialResult, ApiError>;
    /// Flushes all buffered points to parts; returns the number of parts.
    async fn flush(&self) -> Result<usize, ApiError>;
    /// Runs one compaction round (retention, merges, GC) over every shard
    /// of the groups; returns the summed report.
    async fn compact(&self, groups: &[GroupSpec]) -> Result<ShardReport, ApiError>;
}

/// The in-process data plane of `canopy standalone`.
#[derive(Debug, Clone)]
pub struct LocalDataPlane {
    pub ingester: Arc<Ingester>,
    pub querier: Arc<Querier>,
    pub compactor: Arc<Compactor>,
}

#[async_trait]
impl DataPlane for LocalDataPlane {
    async fn write(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<(), ApiError> {
        Ok(self.ingester.write(schema, points).await?)
    }

    async fn query_shard(&self, plan: &QueryPlan, shard: u32) -> Result<PartialResult, ApiError> {
        // `LAST` over a window the shard's last-value cache saw whole needs no scan.
        if let Some(answer) = self.ingester.last_values(plan, shard).await? {
            return Ok(answer);
        }
        let snap = self.ingester.snapshot_for(plan, shard).await?;
        Ok(self.querier.execute_shard(plan, &snap.catalog, snap.rows).await?)
    }

    async fn flush(&self) -> Result<usize, ApiError> {
        Ok(self.ingester.flush_all().await?)
    }

    async fn compact(&self, groups: &[GroupSpec]) -> Result<ShardReport, ApiError> {
        let total = self.compactor.run_groups(groups).await.map_err(|e| ApiError::new(crate::Code::Internal, e.to_string()))?;
        // Queries should see the compacted catalog now, not at the next refresh.
        self.ingester.refresh_catalogs().await?;
        Ok(total)
    }
}
