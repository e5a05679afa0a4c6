//! `canopy standalone`: wiring of all roles in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_compactor::Compactor;
use canopy_ingester::{Ingester, IngesterConfig};
use canopy_liaison::{Gateway, LocalDataPlane, start_liaison};
use canopy_meta::{EmbeddedStore, SchemaRegistry};
use canopy_querier::{Querier, QuerierConfig};

use crate::args::{AgentArgs, AuthArgs, CacheArgs, FlushArgs, GcArgs, GrpcLimitArgs, ObjectStoreArgs, TlsArgs};

/// Options of `canopy standalone`; each also reads a `CANOPY_*` variable.
#[derive(Debug, clap::Args)]
pub(crate) struct StandaloneArgs {
    /// Local directory for the WAL and embedded metadata.
    #[arg(long, env = "CANOPY_DATA_DIR", default_value = "canopy-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: ObjectStoreArgs,
    /// gRPC listen address.
    #[arg(long, env = "CANOPY_GRPC_ADDR", default_value = "0.0.0.0:17912")]
    grpc_addr: SocketAddr,
    /// HTTP listen address.
    #[arg(long, env = "CANOPY_HTTP_ADDR", default_value = "0.0.0.0:17913")]
    http_addr: SocketAddr,
    #[command(flatten)]
    agents: AgentArgs,
    #[command(flatten)]
    grpc_limits: GrpcLimitArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    flush: FlushArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Seconds between compaction rounds (retention, merges, GC); 0 disables them.
    #[arg(long, env = "CANOPY_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    compaction_interval_secs: u64,
    /// A query running longer than this fails with DEADLINE_EXCEEDED.
    #[arg(long, env = "CANOPY_QUERY_TIMEOUT_SECS", default_value_t = 60)]
    query_timeout_secs: u64,
    #[command(flatten)]
    gc: GcArgs,
}

/// Runs until SIGINT or SIGTERM, then stops serving and flushes.
pub(crate) async fn run(a: StandaloneArgs) -> anyhow::Result<()> {
    let ccfg = a.gc.compactor_config(a.query_timeout_secs)?;
    std::fs::create_dir_all(&a.data_dir)?;
    let default_url = Some(a.data_dir.join("objects").to_string_lossy().into_owned());
    let url = a.store.url(default_url.clone())?;
    let (store, store_counters) = a.store.open_for_commits(default_url).await?;
    let registry = Arc::new(SchemaRegistry::new(Arc::new(EmbeddedStore::open(&a.data_dir.join("meta"))?)));
    let mut icfg = IngesterConfig::new(a.data_dir.clone());
    a.flush.apply(&mut icfg);
    let ingester = Ingester::open(icfg, store.clone()).await?;
    let flusher = ingester.spawn_flusher();
    // Only queries read through the part cache: the compactor's reads of
    // parts it is about to replace would only crowd it.
    // A local-directory store is already on this disk, in the page cache:
    // a disk tier would only copy it.
    let disk_tier = url.starts_with("s3://").then(|| a.data_dir.join("cache"));
    let cached = a.cache.open(store.clone(), disk_tier).await?;
    let querier = Arc::new(Querier::new(QuerierConfig::default(), cached.clone()));
    let compactor = Arc::new(Compactor::new(ccfg, store));
    let data = Arc::new(LocalDataPlane { ingester: ingester.clone(), querier, compactor });
    let agents = a.agents.config();
    let mut cfg = a.agents.liaison_config(a.grpc_addr, a.http_addr, &a.grpc_limits)?;
    a.tls.apply(&mut cfg)?;
    let mut gw = a.auth.apply(Gateway::new(registry, data).with_agent_config(agents), &cfg)?;
    gw.metrics.count_store(store_counters);
    gw.metrics.count_cache(cached.counters());
    crate::ingester_role::ingester_gauges(&gw.metrics, &ingester);
    gw.query_timeout = Duration::from_secs(a.query_timeout_secs);
    let compaction = (a.compaction_interval_secs > 0).then(|| {
        let gw = gw.clone();
        let every = Duration::from_secs(a.compaction_interval_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match gw.compact().await {
                    Ok(r) if r != Default::default() => tracing::info!(?r, "compaction round"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "compaction round failed; will retry"),
                }
            }
        })
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let bound = start_liaison(&cfg, gw, stop_rx).await?;
    let (http, grpc) = (bound.http, bound.grpc);
    let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(%http, %grpc, otlp_grpc = %show(bound.otlp_grpc), otlp_http = %show(bound.otlp_http), object_store = %url, data_dir = %a.data_dir.display(), "canopy standalone ready");
    crate::args::announce_liaison(&bound, "");
    let tasks = bound.tasks;

    crate::signals::received(1).await;
    tracing::info!("shutting down: draining requests, flushing memtables");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    flusher.abort();
    if let Some(c) = compaction {
        c.abort();
    }
    cached.close().await;
    let parts = ingester.flush_all().await?;
    tracing::info!(parts, "flushed; bye");
    Ok(())
}
