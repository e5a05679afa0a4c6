//! The liaison's data plane in cluster mode: writes go to the ingester that
//! owns each shard, queries pin a shard snapshot at its owner and run over
//! object storage on a querier.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use canopy_api::cluster::v1::ingester_service_client::IngesterServiceClient;
use canopy_api::cluster::v1::querier_service_client::QuerierServiceClient;
use canopy_api::cluster::v1::{ExecuteShardRequest, ExecuteShardResponse, IngestRequest, IngesterFlushRequest, SnapshotRequest};
use canopy_compactor::{Compactor, ShardReport};
use canopy_ingester::wal::{WalBatch, encode_batch, encode_batch_v1, is_unknown_format};
use canopy_liaison::{ApiError, Code, DataPlane};
use canopy_model::{GroupSpec, MeasureSchema, PartialResult, Point, QueryPlan};
use canopy_storage::query_stats::QueryCost;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::catalog_cache::CatalogCache;
use crate::dispatch::{LambdaWhen, RowRouter, plan_shard};
use crate::fragment::fragment_of as plan_fragment;
use crate::lambda_client::LambdaInvoker;
use crate::node::Role;
use crate::secret::ClusterSecret;
use crate::view::ClusterView;

/// Channels to other nodes kept before those of departed nodes are dropped.
const CHANNELS_MAX: usize = 256;

/// Largest internal message (a batch, memtable rows, a partial result).
pub const INTERNAL_MESSAGE_BYTES_MAX: usize = 256 << 20;

/// One fragment of a pinned shard, as sent: its parts (empty: every part)
/// and its memtable rows, wire-encoded; the querier that runs it (or runs
/// it when the function fails), and a concurrency slot when it goes to the
/// query function.
#[derive(Debug)]
struct Fragment {
    part_paths: Vec<String>,
    rows: Vec<u8>,
    querier: usize,
    slot: Option<OwnedSemaphorePermit>,
}

/// Limits of the cluster data plane.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Internal write requests in flight at once from this liaison.
    pub writes_in_flight_max: usize,
    /// How long a write waits for a slot before failing RESOURCE_EXHAUSTED.
    pub write_slot_wait: Duration,
    /// How long a write or a shard snapshot keeps retrying while its shard
    /// has no reachable owner (a handover, an ingester restart).
    pub retry_budget: Duration,
    /// Longest wait for one call to an ingester (a write, a snapshot): a
    /// hung ingester fails the call UNAVAILABLE (and it is retried within
    /// `retry_budget`) instead of holding a write slot for ever.
    pub rpc_timeout: Duration,
    /// Carried by every internal call (`secret.rs`).
    pub secret: ClusterSecret,
}

/// A peer's error as the client's: a peer refusing this node's call
/// (UNAUTHENTICATED / PERMISSION_DENIED: a cluster-secret mismatch, e.g. mid
/// rollout) is this cluster's fault, not the client's token — answered as
/// INTERNAL, which agents retry, rather than 401, which they drop.
fn from_peer(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ApiError::new(
            Code::Internal,
            format!("a peer node refused this node's call (check --cluster-secret-file): {}", status.message()),
        ),
        _ => ApiError::from(status),
    }
}

/// A channel to another node whose calls carry the cluster secret.
type Internal = InterceptedService<Channel, ClusterSecret>;

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            writes_in_flight_max: 256,
            write_slot_wait: Duration::from_secs(5),
            retry_budget: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(20),
            secret: ClusterSecret::none(),
        }
    }
}

/// [`DataPlane`] over the cluster's ingesters and queriers.
pub struct ClusterDataPlane {
    view: ClusterView,
    cfg: RoutingConfig,
    slots: Arc<Semaphore>,
    channels: Mutex<HashMap<String, Channel>>,
    compactor: Arc<Compactor>,
    catalogs: CatalogCache,
    lambda: Option<Arc<LambdaInvoker>>,
}

impl ClusterDataPlane {
    /// A data plane over the watched cluster; `compactor` serves the admin
    /// compaction endpoint (the object store is shared, claims keep it
    /// safe) and `catalogs` reads pinned versions to split shards by time.
    pub fn new(view: ClusterView, cfg: RoutingConfig, compactor: Arc<Compactor>, catalogs: CatalogCache) -> ClusterDataPlane {
        ClusterDataPlane {
            slots: Arc::new(Semaphore::new(cfg.writes_in_flight_max)),
            view,
            cfg,
            channels: Mutex::new(HashMap::new()),
            compactor,
            catalogs,
            lambda: None,
        }
    }

    /// Sends fragments to the query function too, as its configuration says.
    pub fn with_lambda(mut self, lambda: Arc<LambdaInvoker>) -> ClusterDataPlane {
        self.lambda = Some(lambda);
        self
    }

    /// Runs one fragment where it was planned: on the query function, and
    /// on its querier if the function fails (throttled, erred, too large),
    /// or on its querier and the others as fallbacks.
    async fn run(&self, queriers: &[String], mut f: Fragment, req: ExecuteShardRequest) -> Result<PartialResult, ApiError> {
        if let (Some(slot), Some(lambda)) = (f.slot.take(), &self.lambda) {
            let answered =
                lambda.invoke(slot, &req).await.and_then(|resp| decode_response(resp, "the query function").map_err(|e| e.message));
            match answered {
                Ok(partial) => {
                    canopy_storage::query_stats::record(QueryCost { lambda_invocations: 1, ..Default::default() });
                    return Ok(partial);
                }
                Err(e) => {
                    tracing::warn!(shard = req.shard, "query function failed, a querier runs the fragment: {e}");
                    canopy_storage::query_stats::record(QueryCost { lambda_fallbacks: 1, ..Default::default() });
                }
            }
        }
        self.execute(queriers, f.querier, req).await
    }

    /// Plans a pinned shard's fragments ([`plan_shard`]) and splits the
    /// owner's memtable rows (wire-encoded) among them by timestamp; rows
    /// are decoded and re-encoded only when the shard is split.
    async fn plan(
        &self,
        plan: &QueryPlan,
        shard: u32,
        version: u64,
        rows: Vec<u8>,
        queriers: &[String],
    ) -> Result<Vec<Fragment>, ApiError> {
        let group = &plan.schema.group.name;
        let lambda = self.lambda.as_ref().filter(|l| l.when() != LambdaWhen::Never);
        let segments = if version == 0 || (queriers.len() < 2 && lambda.is_none()) {
            // Nothing in object storage, or one querier reads it all.
            None
        } else {
            canopy_querier::segments_of(plan, &*self.catalogs.get(group, shard, version).await?)
        };
        let when = lambda.map_or(LambdaWhen::Never, |l| l.when());
        let mut slots = Vec::new();
        let planned = plan_shard(group, shard, segments, queriers, when, || match lambda.and_then(|l| l.try_slot()) {
            Some(s) => {
                slots.push(s);
                true
            }
            None => false,
        });
        let mut slots = slots.into_iter();
        let encoded: Vec<Vec<u8>> = if planned.len() == 1 {
            vec![rows]
        } else {
            let decoded =
                canopy_model::wire::decode_rows(&rows).ok_or_else(|| ApiError::new(Code::Internal, "undecodable snapshot rows"))?;
            let router = RowRouter::new(&planned);
            let mut split: Vec<Vec<(u64, canopy_model::Point)>> = vec![Vec::new(); planned.len()];
            for r in decoded {
                split[router.fragment_of(r.1.ts)].push(r);
            }
            split.iter().map(|r| canopy_model::wire::encode_rows(r)).collect()
        };
        Ok(planned
            .into_iter()
            .zip(encoded)
            .map(|(p, rows)| Fragment {
                slot: if p.lambda { slots.next() } else { None },
                querier: p.querier,
                part_paths: p.part_paths,
                rows,
            })
            .collect())
    }

    /// Runs one fragment on a querier (the `first`-th, then the others as fallbacks).
    async fn execute(&self, queriers: &[String], first: usize, req: ExecuteShardRequest) -> Result<PartialResult, ApiError> {
        let mut last = None;
        for i in 0..queriers.len() {
            let addr = &queriers[(first + i) % queriers.len()];
            let mut client = QuerierServiceClient::with_interceptor(self.channel(addr)?, self.cfg.secret.clone())
                .max_decoding_message_size(INTERNAL_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(INTERNAL_MESSAGE_BYTES_MAX);
            match client.execute_shard(req.clone()).await {
                Ok(r) => return decode_response(r.into_inner(), &format!("querier {addr}")),
                Err(status) => {
                    let e = from_peer(status);
                    if e.code != Code::Unavailable {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ApiError::new(Code::Unavailable, "no querier answered")))
    }

    fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        if channels.len() >= CHANNELS_MAX {
            // Nodes come and go (new addresses after restarts): keep only
            // the channels of registered nodes.
            let live: Vec<String> = self.view.nodes().into_iter().map(|n| n.grpc_addr).collect();
            channels.retain(|a, _| live.contains(a));
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ApiError::new(Code::Internal, format!("node address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            // A peer that vanished without closing (a lost host, a partition)
            // is noticed in seconds, not at the next TCP timeout.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn ingester(&self, addr: &str) -> Result<IngesterServiceClient<Internal>, ApiError> {
        Ok(IngesterServiceClient::with_interceptor(self.channel(addr)?, self.cfg.secret.clone())
            .max_decoding_message_size(INTERNAL_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(INTERNAL_MESSAGE_BYTES_MAX))
    }

    /// The gRPC address of the shard's owner, if it has a live one that has
    /// not released it.
    fn owner_addr(&self, group: &str, shard: u32) -> Option<String> {
        let rec = self.view.owner(group, shard)?;
        if rec.released {
            return None;
        }
        self.view.node(&rec.owner).map(|n| n.grpc_addr)
    }

    /// Waits until ownership or membership changes, or a short while.
    async fn wait_for_change(&self, deadline: Instant) {
        let mut shards = self.view.shards.subscribe();
        let mut nodes = self.view.nodes.subscribe();
        let nap = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        tokio::select! {
            _ = shards.changed() => {}
            _ = nodes.changed() => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }

    /// Calls `op` on the shard's owner, retrying while the shard has no
    /// reachable owner, until the retry budget is spent.
    async fn at_owner<T, F, Fut>(&self, group: &str, shard: u32, op: F) -> Result<T, ApiError>
    where
        F: Fn(IngesterServiceClient<Internal>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.cfg.retry_budget;
        loop {
            let last = match self.owner_addr(group, shard) {
                None => ApiError::new(Code::Unavailable, format!("shard {group}/{shard} has no owner right now")),
                Some(addr) => match tokio::time::timeout(self.cfg.rpc_timeout, op(self.ingester(&addr)?)).await {
                    Ok(Ok(v)) => return Ok(v),
                    Err(_) => ApiError::new(
                        Code::Unavailable,
                        format!("ingester {addr} did not answer within {:?} for shard {group}/{shard}", self.cfg.rpc_timeout),
                    ),
                    Ok(Err(status)) => {
                        let e = from_peer(status);
                        if e.code != Code::Unavailable {
                            return Err(e);
                        }
                        e
                    }
                },
            };
            if Instant::now() >= deadline {
                return Err(ApiError::new(Code::Unavailable, format!("shard {group}/{shard}: {}", last.message)));
            }
            self.wait_for_change(deadline).await;
        }
    }

    async fn write_shard(&self, schema: &MeasureSchema, shard: u32, points: Vec<Point>) -> Result<(), ApiError> {
        let whole = WalBatch::for_schema(schema, points);
        let batch = encode_batch(&whole);
        let _slot = tokio::time::timeout(self.cfg.write_slot_wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::new(Code::ResourceExhausted, "too many writes in flight at this liaison; retry later"))?
            .map_err(|_| ApiError::new(Code::Unavailable, "shutting down"))?;
        // A retry after a lost reply may store the batch twice; queries
        // deduplicate by (series, timestamp, version), so it is returned once.
        let send = |batch: Vec<u8>| {
            self.at_owner(&schema.group.name, shard, move |mut c| {
                let batch = batch.clone();
                async move { c.ingest(IngestRequest { batch }).await.map(drop) }
            })
        };
        match send(batch).await {
            // An ingester of the release before WAL format 2 (a rolling
            // upgrade that reached this liaison first) takes format 1.
            Err(e) if e.code == Code::InvalidArgument && is_unknown_format(&e.message) => send(encode_batch_v1(&whole)).await,
            other => other,
        }
    }

    fn queriers(&self) -> Vec<String> {
        let mut q: Vec<String> = self.view.nodes().into_iter().filter(|n| n.has(Role::Querier)).map(|n| n.grpc_addr).collect();
        q.sort();
        q
    }
}

/// A fragment's partial result, its cost added to the query's tally once
/// it decodes (an answer the function garbled is run again elsewhere, and
/// only that run counts).
fn decode_response(r: ExecuteShardResponse, from: &str) -> Result<PartialResult, ApiError> {
    let partial = canopy_model::wire::decode_partial(&r.partial)
        .ok_or_else(|| ApiError::new(Code::Internal, format!("{from} sent an undecodable partial result")))?;
    if let Some(s) = &r.stats {
        canopy_storage::query_stats::record(s.into());
    }
    Ok(partial)
}

#[async_trait]
impl DataPlane for ClusterDataPlane {
    async fn write(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<(), ApiError> {
        // One shard's points (as the gateway groups them) go as they are.
        if let Some(shard) = canopy_model::one_shard(&points) {
            return self.write_shard(schema, shard, points).await;
        }
        let mut by_shard: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
        for p in points {
            by_shard.entry(p.shard).or_default().push(p);
        }
        futures::future::try_join_all(by_shard.into_iter().map(|(shard, pts)| self.write_shard(schema, shard, pts))).await?;
        Ok(())
    }

    async fn query_shard(&self, plan: &QueryPlan, shard: u32) -> Result<PartialResult, ApiError> {
        let fragment = plan_fragment(plan);
        let group = &plan.schema.group.name;
        // Pin the shard: the owner's catalog version and its points above
        // that version's watermark, taken atomically.
        let snap = self
            .at_owner(group, shard, |mut c| {
                let req = SnapshotRequest { fragment: Some(fragment.clone()), shard, accept_last_values: true };
                async move { c.snapshot(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        if !snap.last_values.is_empty() {
            // The owner's last-value cache answered: no parts to read.
            return canopy_model::wire::decode_partial(&snap.last_values)
                .ok_or_else(|| ApiError::new(Code::Internal, format!("shard {group}/{shard}: undecodable last-value answer")));
        }
        let queriers = self.queriers();
        if queriers.is_empty() {
            return Err(ApiError::new(Code::Unavailable, "no querier is registered"));
        }
        let fragments = self.plan(plan, shard, snap.catalog_version, snap.rows, &queriers).await?;
        let runs = fragments.into_iter().map(|mut f| {
            let req = ExecuteShardRequest {
                fragment: Some(fragment.clone()),
                shard,
                catalog_version: snap.catalog_version,
                mem_rows: std::mem::take(&mut f.rows),
                part_paths: std::mem::take(&mut f.part_paths),
            };
            self.run(&queriers, f, req)
        });
        let partials = futures::future::try_join_all(runs).await?;
        if partials.len() == 1 {
            return Ok(partials.into_iter().next().expect("one partial"));
        }
        Ok(canopy_querier::merge_partials(plan, partials)?)
    }

    async fn flush(&self) -> Result<usize, ApiError> {
        let mut parts = 0;
        for n in self.view.nodes().into_iter().filter(|n| n.has(Role::Ingester)) {
            let r = self.ingester(&n.grpc_addr)?.flush(IngesterFlushRequest {}).await.map_err(from_peer)?;
            parts += r.into_inner().parts as usize;
        }
        Ok(parts)
    }

    async fn compact(&self, groups: &[GroupSpec]) -> Result<ShardReport, ApiError> {
        self.compactor.run_groups(groups).await.map_err(|e| ApiError::new(Code::Internal, e.to_string()))
    }
}
