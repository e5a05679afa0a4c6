//! `canopy standalone`: wiring of all roles in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_compactor::{Compactor, CompactorConfig};
use canopy_ingester::{Ingester, IngesterConfig};
use canopy_liaison::{AgentConfig, Gateway, LiaisonConfig, LocalDataPlane, start_liaison};
use canopy_meta::{EmbeddedStore, SchemaRegistry};
use canopy_querier::{Querier, QuerierConfig};
use canopy_storage::{ObjectStoreConfig, open_object_store};

/// Where parts and catalogs live; shared by every role.
#[derive(Debug, clap::Args)]
pub(crate) struct ObjectStoreArgs {
    /// Object store for parts and catalogs: a directory, `file:///dir` or
    /// `s3://bucket[/prefix]`. Default (standalone): `<data-dir>/objects`.
    #[arg(long, env = "CANOPY_OBJECT_STORE")]
    object_store: Option<String>,
    /// S3 endpoint for S3-compatible servers (MinIO, s3s-fs).
    #[arg(long, env = "CANOPY_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION or us-east-1).
    #[arg(long, env = "CANOPY_S3_REGION")]
    s3_region: Option<String>,
    /// S3 access key (default: AWS_ACCESS_KEY_ID).
    #[arg(long, env = "CANOPY_S3_ACCESS_KEY_ID")]
    s3_access_key_id: Option<String>,
    /// S3 secret key (default: AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "CANOPY_S3_SECRET_ACCESS_KEY")]
    s3_secret_access_key: Option<String>,
}

impl ObjectStoreArgs {
    /// Opens the store; `default_url` applies when `--object-store` is absent.
    pub(crate) fn open(&self, default_url: Option<String>) -> anyhow::Result<Arc<dyn object_store::ObjectStore>> {
        let url = self.url(default_url)?;
        Ok(open_object_store(&ObjectStoreConfig {
            url,
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key: self.s3_secret_access_key.clone(),
        })?)
    }

    fn url(&self, default_url: Option<String>) -> anyhow::Result<String> {
        self.object_store.clone().or(default_url).ok_or_else(|| anyhow::anyhow!("--object-store is required"))
    }
}

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
    /// OTLP/gRPC listen address (agents' default port 4317), or "off".
    #[arg(long, env = "CANOPY_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    otlp_grpc_addr: String,
    /// OTLP/HTTP listen address (agents' default port 4318), or "off".
    #[arg(long, env = "CANOPY_OTLP_HTTP_ADDR", default_value = "0.0.0.0:4318")]
    otlp_http_addr: String,
    /// InfluxDB write listen address (clients' default port 8086), or "off".
    #[arg(long, env = "CANOPY_INFLUX_ADDR", default_value = "0.0.0.0:8086")]
    influx_addr: String,
    /// Group for Prometheus remote write / read.
    #[arg(long, env = "CANOPY_PROMETHEUS_GROUP", default_value = "prometheus")]
    prometheus_group: String,
    /// Group for OTLP metrics.
    #[arg(long, env = "CANOPY_OTLP_GROUP", default_value = "otlp")]
    otlp_group: String,
    /// Group for line protocol writes without a database / bucket.
    #[arg(long, env = "CANOPY_INFLUX_GROUP", default_value = "influx")]
    influx_group: String,
    /// Most series per measure created by agents; new series beyond it are rejected.
    #[arg(long, env = "CANOPY_AGENT_SERIES_MAX", default_value_t = 100_000)]
    agent_series_max: usize,
    /// Most labels per series from agents.
    #[arg(long, env = "CANOPY_AGENT_LABELS_MAX", default_value_t = 64)]
    agent_labels_max: usize,
    /// Longest label (name + value, bytes) from agents.
    #[arg(long, env = "CANOPY_AGENT_LABEL_BYTES_MAX", default_value_t = 2048)]
    agent_label_bytes_max: usize,
    /// Largest agent request body once decompressed.
    #[arg(long, env = "CANOPY_AGENT_BODY_BYTES_MAX", default_value_t = 64 << 20)]
    agent_body_bytes_max: usize,
    /// Flush a shard's memtable at this many bytes.
    #[arg(long, env = "CANOPY_FLUSH_BYTES", default_value_t = 64 << 20)]
    flush_bytes: usize,
    /// Flush a shard's memtable when its oldest point is this many seconds old.
    #[arg(long, env = "CANOPY_FLUSH_INTERVAL_SECS", default_value_t = 60)]
    flush_interval_secs: u64,
    /// Memory all memtables may use before writes are refused.
    #[arg(long, env = "CANOPY_MEMTABLE_BYTES_MAX", default_value_t = 2 << 30)]
    memtable_bytes_max: usize,
    /// Seconds between compaction rounds (retention, merges, GC); 0 disables them.
    #[arg(long, env = "CANOPY_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    compaction_interval_secs: u64,
    /// A query running longer than this fails with DEADLINE_EXCEEDED.
    #[arg(long, env = "CANOPY_QUERY_TIMEOUT_SECS", default_value_t = 60)]
    query_timeout_secs: u64,
    /// Removed parts stay readable this long before deletion; must exceed the query timeout.
    #[arg(long, env = "CANOPY_GC_GRACE_SECS", default_value_t = 600)]
    gc_grace_secs: u64,
    /// Unreferenced objects younger than this are never collected as orphans.
    #[arg(long, env = "CANOPY_ORPHAN_MIN_AGE_SECS", default_value_t = 7200)]
    orphan_min_age_secs: u64,
}

/// Runs until SIGINT or SIGTERM, then stops serving and flushes.
pub(crate) async fn run(a: StandaloneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.gc_grace_secs > a.query_timeout_secs,
        "--gc-grace-secs ({}) must exceed --query-timeout-secs ({}): a running query may still read removed parts",
        a.gc_grace_secs,
        a.query_timeout_secs
    );
    anyhow::ensure!(
        a.orphan_min_age_secs > canopy_ingester::UPLOAD_COMMIT_WINDOW_SECS,
        "--orphan-min-age-secs must exceed the flush upload-to-commit window ({} s)",
        canopy_ingester::UPLOAD_COMMIT_WINDOW_SECS
    );
    std::fs::create_dir_all(&a.data_dir)?;
    let default_url = Some(a.data_dir.join("objects").to_string_lossy().into_owned());
    let url = a.store.url(default_url.clone())?;
    let store = a.store.open(default_url)?;
    let registry = Arc::new(SchemaRegistry::new(Arc::new(EmbeddedStore::open(&a.data_dir.join("meta"))?)));
    let mut icfg = IngesterConfig::new(a.data_dir.clone());
    icfg.flush_bytes = a.flush_bytes;
    icfg.flush_interval = Duration::from_secs(a.flush_interval_secs);
    icfg.memtable_bytes_max = a.memtable_bytes_max;
    let ingester = Ingester::open(icfg, store.clone()).await?;
    let flusher = ingester.spawn_flusher();
    let querier = Arc::new(Querier::new(QuerierConfig::default(), store.clone()));
    let ccfg = CompactorConfig {
        gc_grace: Duration::from_secs(a.gc_grace_secs),
        orphan_min_age: Duration::from_secs(a.orphan_min_age_secs),
        ..CompactorConfig::default()
    };
    let compactor = Arc::new(Compactor::new(ccfg, store));
    let data = Arc::new(LocalDataPlane { ingester: ingester.clone(), querier, compactor });
    let agents = AgentConfig {
        prometheus_group: a.prometheus_group.clone(),
        otlp_group: a.otlp_group.clone(),
        influx_group: a.influx_group.clone(),
        series_per_measure_max: a.agent_series_max,
        labels_per_series_max: a.agent_labels_max,
        label_bytes_max: a.agent_label_bytes_max,
        body_bytes_max: a.agent_body_bytes_max,
        ..AgentConfig::default()
    };
    let mut gw = Gateway::new(registry, data).with_agent_config(agents);
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
    let optional = |s: &str| -> anyhow::Result<Option<SocketAddr>> { if s == "off" { Ok(None) } else { Ok(Some(s.parse()?)) } };
    let cfg = LiaisonConfig {
        grpc_addr: a.grpc_addr,
        http_addr: a.http_addr,
        otlp_grpc_addr: optional(&a.otlp_grpc_addr)?,
        otlp_http_addr: optional(&a.otlp_http_addr)?,
        influx_addr: optional(&a.influx_addr)?,
    };
    let bound = start_liaison(&cfg, gw, stop_rx).await?;
    let (http, grpc) = (bound.http, bound.grpc);
    let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(%http, %grpc, otlp_grpc = %show(bound.otlp_grpc), otlp_http = %show(bound.otlp_http), object_store = %url, data_dir = %a.data_dir.display(), "canopy standalone ready");
    // One machine-readable line on stdout for scripts and tests.
    println!(
        "READY http={http} grpc={grpc} otlp_grpc={} otlp_http={} influx={}",
        show(bound.otlp_grpc),
        show(bound.otlp_http),
        show(bound.influx)
    );
    let tasks = bound.tasks;

    shutdown_signal().await;
    tracing::info!("shutting down: draining requests, flushing memtables");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    flusher.abort();
    if let Some(c) = compaction {
        c.abort();
    }
    let parts = ingester.flush_all().await?;
    tracing::info!(parts, "flushed; bye");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
