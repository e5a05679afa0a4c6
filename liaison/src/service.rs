//! The gateway's operations, shared by the HTTP and gRPC front ends.

use std::sync::Arc;
use std::time::Duration;

use canopy_api::v1::{Group, Measure, PointError, QueryRequest, QueryResponse, Status, WriteRequest, WriteResponse};
use canopy_meta::{MetaError, SchemaRegistry};
use canopy_model::{QueryPlan, now_nanos, validate_batch};

use crate::data_plane::DataPlane;
use crate::error::{ApiError, Code};
use crate::metrics::RoleMetrics;
use canopy_model::{MeasureSchema, Point};

/// Most points in one write request; larger batches must be split.
pub(crate) const WRITE_POINTS_MAX: usize = 100_000;

/// Default query deadline; the GC grace period must be longer.
pub const QUERY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// The gateway: schema registry plus data plane.
#[derive(Clone)]
pub struct Gateway {
    pub registry: Arc<SchemaRegistry>,
    pub data: Arc<dyn DataPlane>,
    /// A query still running after this fails with DEADLINE_EXCEEDED, so no
    /// query holds a catalog version longer than the GC grace period.
    pub query_timeout: Duration,
    /// Schema on the fly for agent protocols.
    pub(crate) agents: Arc<crate::agents::AutoSchema>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<RoleMetrics>,
    /// Tokens every request must present (`auth.rs`); `None`: no authentication.
    pub auth: Option<Arc<crate::auth::Tokens>>,
}

impl Gateway {
    /// A gateway over a registry and a data plane.
    pub fn new(registry: Arc<SchemaRegistry>, data: Arc<dyn DataPlane>) -> Gateway {
        let agents = Arc::new(crate::agents::AutoSchema::new(registry.clone(), crate::agents::AgentConfig::default()));
        Gateway { registry, data, query_timeout: QUERY_TIMEOUT_DEFAULT, agents, metrics: RoleMetrics::new("standalone"), auth: None }
    }

    /// Requires these tokens of every request but health checks.
    pub fn with_auth(mut self, tokens: crate::auth::Tokens) -> Gateway {
        self.auth = Some(Arc::new(tokens));
        self
    }

    /// Sets the metrics this gateway counts into (and serves).
    pub fn with_metrics(mut self, metrics: Arc<RoleMetrics>) -> Gateway {
        self.metrics = metrics;
        self
    }

    /// Stores validated points, counting them.
    pub(crate) async fn store(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<(), ApiError> {
        self.store_sharded(schema, vec![points]).await
    }

    /// Stores validated points already grouped by shard (one batch per
    /// shard: the data plane need not move them into groups of its own),
    /// counting them as one request.
    pub(crate) async fn store_sharded(&self, schema: &MeasureSchema, batches: Vec<Vec<Point>>) -> Result<(), ApiError> {
        let n = batches.iter().map(Vec::len).sum::<usize>() as u64;
        self.metrics.requests.inc();
        let writes = batches.into_iter().filter(|b| !b.is_empty()).map(|b| self.data.write(schema, b));
        // Every shard's write runs to its end (as one batch's did), then
        // the first error, if any, is the answer.
        match futures::future::join_all(writes).await.into_iter().collect::<Result<Vec<()>, ApiError>>().map(drop) {
            Ok(()) => {
                self.metrics.points.add(n);
                Ok(())
            }
            Err(e) => {
                self.metrics.errors.inc();
                Err(e)
            }
        }
    }

    /// Sets where agent writes land and their limits.
    pub fn with_agent_config(mut self, cfg: crate::agents::AgentConfig) -> Gateway {
        self.agents = Arc::new(crate::agents::AutoSchema::new(self.registry.clone(), cfg));
        self
    }

    /// Runs one compaction round over every group.
    pub async fn compact(&self) -> Result<canopy_compactor::ShardReport, ApiError> {
        let mut specs = Vec::new();
        for g in self.registry.list_groups().await? {
            specs.push(canopy_model::GroupSpec::compile(&g)?);
        }
        self.data.compact(&specs).await
    }

    /// Writes one batch. Valid points are stored even when others are
    /// rejected; the response counts them and names each rejected point's field.
    pub async fn write(&self, req: WriteRequest) -> WriteResponse {
        let message_id = req.message_id;
        let fail =
            |status: Status, message: String| WriteResponse { message_id, status: status as i32, accepted: 0, errors: vec![], message };
        let Some(md) = req.metadata.as_ref() else {
            return fail(Status::InvalidArgument, "metadata: required (group and name of the measure)".into());
        };
        if req.data_points.len() > WRITE_POINTS_MAX {
            return fail(
                Status::InvalidArgument,
                format!("data_points: {} points in one request, the limit is {WRITE_POINTS_MAX}", req.data_points.len()),
            );
        }
        let schema = match self.registry.measure_schema(&md.group, &md.name).await {
            Ok(s) => s,
            Err(MetaError::NotFound(what)) => {
                return fail(Status::NotFound, format!("metadata: {what} not found"));
            }
            Err(e) => return fail(Status::InternalError, ApiError::new(Code::Internal, e.to_string()).for_client().message),
        };
        let (points, rejected) = validate_batch(&schema, &req.data_points, now_nanos());
        let accepted = points.len() as u32;
        if !points.is_empty()
            && let Err(e) = self.store(&schema, points).await
        {
            let status = if e.code == Code::ResourceExhausted { Status::ResourceExhausted } else { Status::InternalError };
            return fail(status, e.for_client().message);
        }
        let errors: Vec<PointError> =
            rejected.into_iter().map(|r| PointError { index: r.index, field: r.field, message: r.message }).collect();
        let (status, message) = match errors.first() {
            None => (Status::Succeed, String::new()),
            Some(e) => (
                Status::InvalidArgument,
                format!("{} of {} points rejected; first: {}: {}", errors.len(), req.data_points.len(), e.field, e.message),
            ),
        };
        WriteResponse { message_id, status: status as i32, accepted, errors, message }
    }

    /// Runs a query over every shard of the measure's group and merges,
    /// within the query deadline.
    /// With `with_stats`, the response says what the query cost (requests,
    /// bytes, cache hits, parts scanned and skipped) on every node it ran.
    pub async fn query(&self, req: QueryRequest) -> Result<QueryResponse, ApiError> {
        self.metrics.queries.inc();
        let with_stats = req.with_stats;
        let (r, cost) = canopy_storage::query_stats::measure(tokio::time::timeout(self.query_timeout, self.query_inner(req))).await;
        let r = match r {
            Ok(Ok(mut resp)) => {
                resp.stats = with_stats.then(|| cost.into());
                Ok(resp)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::new(Code::DeadlineExceeded, format!("query took longer than {:?}", self.query_timeout))),
        };
        if r.is_err() {
            self.metrics.query_errors.inc();
        }
        r
    }

    async fn query_inner(&self, req: QueryRequest) -> Result<QueryResponse, ApiError> {
        let group = match req.groups.as_slice() {
            [g] => g.clone(),
            [] => return Err(ApiError::invalid("groups", "one group is required")),
            _ => {
                return Err(ApiError::invalid("groups", "querying several groups at once is not supported yet"));
            }
        };
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "the measure name is required"));
        }
        let schema = self.registry.measure_schema(&group, &req.name).await?;
        let plan = QueryPlan::compile(schema, &req, now_nanos())?;
        // The querier's root runs the query; the data plane only reaches
        // each shard's leaf (in process, or over gRPC in a cluster).
        let data_points = canopy_querier::execute_root(&plan, |s| self.data.query_shard(&plan, s)).await?;
        Ok(QueryResponse { data_points, stats: None })
    }

    /// Creates a group.
    pub async fn create_group(&self, g: Option<Group>) -> Result<(), ApiError> {
        Ok(self.registry.create_group(g.ok_or_else(|| ApiError::invalid("group", "required"))?).await?)
    }

    /// Updates a group.
    pub async fn update_group(&self, g: Option<Group>) -> Result<(), ApiError> {
        Ok(self.registry.update_group(g.ok_or_else(|| ApiError::invalid("group", "required"))?).await?)
    }

    /// Creates a measure; returns its revision.
    pub async fn create_measure(&self, m: Option<Measure>) -> Result<i64, ApiError> {
        Ok(self.registry.create_measure(m.ok_or_else(|| ApiError::invalid("measure", "required"))?).await?)
    }

    /// Updates a measure; returns its revision.
    pub async fn update_measure(&self, m: Option<Measure>) -> Result<i64, ApiError> {
        Ok(self.registry.update_measure(m.ok_or_else(|| ApiError::invalid("measure", "required"))?).await?)
    }
}
