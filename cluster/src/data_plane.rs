//! The liaison's data plane in cluster mode: writes go to the ingester that
//! owns each shard, queries pin a shard snapshot at its owner and run over
//! object storage on a querier.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use canopy_api::cluster::v1::ingester_service_client::IngesterServiceClient;
use canopy_api::cluster::v1::querier_service_client::QuerierServiceClient;
use canopy_api::cluster::v1::{ExecuteShardRequest, IngestRequest, IngesterFlushRequest, SnapshotRequest};
use canopy_compactor::{Compactor, ShardReport};
use canopy_ingester::wal::{WalBatch, encode_batch};
use canopy_liaison::{ApiError, Code, DataPlane};
use canopy_model::{GroupSpec, MeasureSchema, PartialResult, Point, QueryPlan};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::catalog_cache::CatalogCache;
use crate::fragment::fragment_of;
use crate::node::Role;
use crate::view::ClusterView;

/// Channels to other nodes kept before those of departed nodes are dropped.
const CHANNELS_MAX: usize = 256;

/// Largest internal message (a batch, memtable rows, a partial result).
pub const INTERNAL_MESSAGE_BYTES_MAX: usize = 256 << 20;

/// One querier's share of a split shard, as sent: its parts (empty: every
/// part) and its memtable rows, wire-encoded.
#[derive(Debug)]
struct Fragment {
    part_paths: Vec<String>,
    rows: Vec<u8>,
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
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig { writes_in_flight_max: 256, write_slot_wait: Duration::from_secs(5), retry_budget: Duration::from_secs(30) }
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
        }
    }

    /// The fragments of a pinned shard for `ways` queriers, as planned by
    /// [`canopy_querier::split_by_segment`]; the memtable rows (wire-encoded)
    /// are decoded and re-encoded only when the shard is split.
    async fn split(&self, plan: &QueryPlan, shard: u32, version: u64, rows: Vec<u8>, ways: usize) -> Result<Vec<Fragment>, ApiError> {
        if ways < 2 || version == 0 {
            return Ok(vec![Fragment { part_paths: Vec::new(), rows }]);
        }
        let catalog = self.catalogs.get(&plan.schema.group.name, shard, version).await?;
        let planned = canopy_querier::split_by_segment(plan, &catalog, ways);
        if planned.is_empty() {
            return Ok(vec![Fragment { part_paths: Vec::new(), rows }]);
        }
        let decoded = canopy_model::wire::decode_rows(&rows).ok_or_else(|| ApiError::new(Code::Internal, "undecodable snapshot rows"))?;
        let mut split_rows: Vec<Vec<(u64, canopy_model::Point)>> = vec![Vec::new(); planned.len()];
        for r in decoded {
            split_rows[canopy_querier::fragment_of(&planned, r.1.ts)].push(r);
        }
        Ok(planned
            .into_iter()
            .zip(split_rows)
            .map(|(f, rows)| Fragment { part_paths: f.part_paths, rows: canopy_model::wire::encode_rows(&rows) })
            .collect())
    }

    /// Runs one fragment on a querier (the `first`-th, then the others as fallbacks).
    async fn execute(&self, queriers: &[String], first: usize, req: ExecuteShardRequest) -> Result<PartialResult, ApiError> {
        let mut last = None;
        for i in 0..queriers.len() {
            let addr = &queriers[(first + i) % queriers.len()];
            let mut client = QuerierServiceClient::new(self.channel(addr)?)
                .max_decoding_message_size(INTERNAL_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(INTERNAL_MESSAGE_BYTES_MAX);
            match client.execute_shard(req.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if let Some(s) = &r.stats {
                        canopy_storage::query_stats::record(s.into());
                    }
                    return canopy_model::wire::decode_partial(&r.partial)
                        .ok_or_else(|| ApiError::new(Code::Internal, format!("querier {addr} sent an undecodable partial result")));
                }
                Err(status) => {
                    let e = ApiError::from(status);
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
            .connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn ingester(&self, addr: &str) -> Result<IngesterServiceClient<Channel>, ApiError> {
        Ok(IngesterServiceClient::new(self.channel(addr)?)
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
        F: Fn(IngesterServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.cfg.retry_budget;
        loop {
            let last = match self.owner_addr(group, shard) {
                None => ApiError::new(Code::Unavailable, format!("shard {group}/{shard} has no owner right now")),
                Some(addr) => match op(self.ingester(&addr)?).await {
                    Ok(v) => return Ok(v),
                    Err(status) => {
                        let e = ApiError::from(status);
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
        let batch = encode_batch(&WalBatch::for_schema(schema, points));
        let _slot = tokio::time::timeout(self.cfg.write_slot_wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::new(Code::ResourceExhausted, "too many writes in flight at this liaison; retry later"))?
            .map_err(|_| ApiError::new(Code::Unavailable, "shutting down"))?;
        // A retry after a lost reply may store the batch twice; queries
        // deduplicate by (series, timestamp, version), so it is returned once.
        self.at_owner(&schema.group.name, shard, |mut c| {
            let batch = batch.clone();
            async move { c.ingest(IngestRequest { batch }).await.map(drop) }
        })
        .await
    }

    fn queriers(&self) -> Vec<String> {
        let mut q: Vec<String> = self.view.nodes().into_iter().filter(|n| n.has(Role::Querier)).map(|n| n.grpc_addr).collect();
        q.sort();
        q
    }
}

#[async_trait]
impl DataPlane for ClusterDataPlane {
    async fn write(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<(), ApiError> {
        let mut by_shard: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
        for p in points {
            by_shard.entry(p.shard).or_default().push(p);
        }
        futures::future::try_join_all(by_shard.into_iter().map(|(shard, pts)| self.write_shard(schema, shard, pts))).await?;
        Ok(())
    }

    async fn query_shard(&self, plan: &QueryPlan, shard: u32) -> Result<PartialResult, ApiError> {
        let fragment = fragment_of(plan);
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
        // Shard s starts at querier s mod n (its caches stay warm); a split
        // shard's fragments go to the next ones.
        let fragments = self.split(plan, shard, snap.catalog_version, snap.rows, queriers.len()).await?;
        let runs = fragments.into_iter().enumerate().map(|(i, f)| {
            let req = ExecuteShardRequest {
                fragment: Some(fragment.clone()),
                shard,
                catalog_version: snap.catalog_version,
                mem_rows: f.rows,
                part_paths: f.part_paths,
            };
            self.execute(&queriers, shard as usize + i, req)
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
            let r = self.ingester(&n.grpc_addr)?.flush(IngesterFlushRequest {}).await.map_err(ApiError::from)?;
            parts += r.into_inner().parts as usize;
        }
        Ok(parts)
    }

    async fn compact(&self, groups: &[GroupSpec]) -> Result<ShardReport, ApiError> {
        self.compactor.run_groups(groups).await.map_err(|e| ApiError::new(Code::Internal, e.to_string()))
    }
}
