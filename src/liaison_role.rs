//! `canopy liaison`: the stateless gateway of a cluster. Schemas live in
//! etcd; writes go to shard owners, queries fan out to ingesters (shard
//! snapshots) and queriers (parts).

use std::sync::Arc;
use std::time::Duration;

use canopy_cluster::metrics::RoleMetrics;
use canopy_cluster::{CatalogCache, ClusterDataPlane, EtcdStore, Role, RoutingConfig};
use canopy_compactor::Compactor;
use canopy_liaison::{Gateway, serve_liaison};
use canopy_meta::SchemaRegistry;
use canopy_storage::CatalogStore;

use crate::args::{AgentArgs, AuthArgs, GcArgs, ObjectStoreArgs, TlsArgs};
use crate::lambda_args::LambdaArgs;
use crate::node::{Node, NodeArgs};

/// Options of `canopy liaison`.
#[derive(Debug, clap::Args)]
pub(crate) struct LiaisonArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The object store (for the admin compaction endpoint).
    #[command(flatten)]
    store: ObjectStoreArgs,
    #[command(flatten)]
    agents: AgentArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    gc: GcArgs,
    #[command(flatten)]
    lambda: LambdaArgs,
    /// A query running longer than this fails with DEADLINE_EXCEEDED.
    #[arg(long, env = "CANOPY_QUERY_TIMEOUT_SECS", default_value_t = 60)]
    query_timeout_secs: u64,
    /// Internal writes in flight at once; beyond it writes wait, then fail RESOURCE_EXHAUSTED.
    #[arg(long, env = "CANOPY_WRITES_IN_FLIGHT_MAX", default_value_t = 256)]
    writes_in_flight_max: usize,
    /// Seconds a write keeps retrying while its shard changes owner.
    #[arg(long, env = "CANOPY_WRITE_RETRY_SECS", default_value_t = 30)]
    write_retry_secs: u64,
    /// Seconds one call to an ingester (a write, a snapshot) may take before
    /// it fails UNAVAILABLE and is retried: a hung ingester holds no write
    /// slot longer.
    #[arg(long, env = "CANOPY_INTERNAL_RPC_TIMEOUT_SECS", default_value_t = 20)]
    internal_rpc_timeout_secs: u64,
}

/// Runs until SIGINT/SIGTERM.
pub(crate) async fn run(a: LiaisonArgs) -> anyhow::Result<()> {
    let ccfg = a.gc.compactor_config(a.query_timeout_secs)?;
    let (store, store_counters) = a.store.open(None)?;
    let mut node = Node::start(&a.node, vec![Role::Liaison]).await?;
    let registry = Arc::new(SchemaRegistry::new(Arc::new(EtcdStore::new(node.view.client.clone()))));
    node.view.invalidate_on_schema_change(registry.clone());
    let routing = RoutingConfig {
        writes_in_flight_max: a.writes_in_flight_max,
        retry_budget: Duration::from_secs(a.write_retry_secs),
        rpc_timeout: Duration::from_secs(a.internal_rpc_timeout_secs.max(1)),
        secret: node.secret.clone(),
        ..RoutingConfig::default()
    };
    let catalogs = CatalogCache::new(CatalogStore::new(store.clone()));
    let metrics = RoleMetrics::new("liaison");
    let mut data = ClusterDataPlane::new(node.view.clone(), routing, Arc::new(Compactor::new(ccfg, store)), catalogs);
    if let Some(lambda) = a.lambda.invoker(&metrics, Duration::from_secs(a.query_timeout_secs)).await {
        data = data.with_lambda(lambda);
    }
    let data = Arc::new(data);
    metrics.count_store(store_counters);
    let mut gw = Gateway::new(registry, data).with_agent_config(a.agents.config()).with_metrics(metrics);
    gw.query_timeout = Duration::from_secs(a.query_timeout_secs);
    let mut cfg = a.agents.liaison_config(node.bound_grpc(), node.bound_http(), &a.node.grpc_limits)?;
    a.tls.apply(&mut cfg)?;
    let gw = a.auth.apply(gw, &cfg)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (grpc, http) = node.take_listeners();
    let bound = serve_liaison(grpc, http, &cfg, gw, stop_rx).await?;
    let registration = node.register().await?;
    tracing::info!(node = %node.info.id, http = %bound.http, grpc = %bound.grpc, "canopy liaison ready");
    crate::args::announce_liaison(&bound, &format!(" node={}", node.info.id));
    crate::signals::received(1).await;
    registration.deregister().await;
    let _ = stop_tx.send(true);
    for t in bound.tasks {
        let _ = t.await;
    }
    Ok(())
}
