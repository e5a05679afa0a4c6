//! Option groups shared by several roles: object store, garbage-collection
//! timing, and the agent protocols of a liaison.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canopy_compactor::CompactorConfig;
use canopy_liaison::{AgentConfig, LiaisonConfig};
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
    /// Roles that write make sure the bucket aborts incomplete multipart
    /// uploads after at most this many days (adding a lifecycle rule when
    /// none does); 0 leaves the bucket's lifecycle configuration alone.
    #[arg(long, env = "CANOPY_S3_ABORT_MULTIPART_DAYS", default_value_t = 7)]
    s3_abort_multipart_days: i32,
}

impl ObjectStoreArgs {
    /// Opens the store, counting its requests and bytes (for `/metrics`);
    /// `default_url` applies when `--object-store` is absent.
    pub(crate) fn open(
        &self,
        default_url: Option<String>,
    ) -> anyhow::Result<(Arc<dyn object_store::ObjectStore>, Arc<canopy_storage::StoreCounters>)> {
        let store = open_object_store(&self.config(default_url)?)?;
        Ok(canopy_storage::CountingStore::wrap(store))
    }

    fn config(&self, default_url: Option<String>) -> anyhow::Result<ObjectStoreConfig> {
        Ok(ObjectStoreConfig {
            url: self.url(default_url)?,
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key: self.s3_secret_access_key.clone(),
        })
    }

    /// Opens the store for a role that commits catalog versions: refuses a
    /// store that cannot decide create-if-absent (see
    /// [`canopy_storage::probe_conditional_create`]) and makes sure an S3
    /// bucket aborts incomplete multipart uploads (a warning if it cannot).
    pub(crate) async fn open_for_commits(
        &self,
        default_url: Option<String>,
    ) -> anyhow::Result<(Arc<dyn object_store::ObjectStore>, Arc<canopy_storage::StoreCounters>)> {
        let (store, counters) = self.open(default_url.clone())?;
        canopy_storage::probe_conditional_create(store.as_ref()).await?;
        let cfg = self.config(default_url)?;
        let check = crate::bucket_lifecycle::ensure_abort_rule(&cfg, self.s3_abort_multipart_days);
        use crate::bucket_lifecycle::Outcome;
        match tokio::time::timeout(Duration::from_secs(15), check).await {
            Ok(Outcome::NotApplicable | Outcome::Present) => {}
            Ok(Outcome::Added) => tracing::info!(
                days = self.s3_abort_multipart_days,
                rule = crate::bucket_lifecycle::RULE_ID,
                "added a bucket lifecycle rule aborting incomplete multipart uploads"
            ),
            Ok(Outcome::Unverified(why)) => tracing::warn!(
                "could not make sure the bucket aborts incomplete multipart uploads ({why}); add a lifecycle rule \
                 (AbortIncompleteMultipartUpload) yourself, or leaked upload parts stay billed"
            ),
            Err(_) => {
                tracing::warn!("checking the bucket's lifecycle rules timed out; add an AbortIncompleteMultipartUpload rule yourself")
            }
        }
        Ok((store, counters))
    }

    /// The store URL, or `default_url` when `--object-store` is absent.
    pub(crate) fn url(&self, default_url: Option<String>) -> anyhow::Result<String> {
        self.object_store.clone().or(default_url).ok_or_else(|| anyhow::anyhow!("--object-store is required"))
    }
}

/// The part cache of every process that executes queries over parts.
#[derive(Debug, clap::Args)]
pub(crate) struct CacheArgs {
    /// Memory the part cache may use, in bytes.
    #[arg(long, env = "CANOPY_CACHE_MEMORY_BYTES", default_value_t = 256 << 20)]
    cache_memory_bytes: usize,
    /// Directory of the part cache's disk tier (kept across restarts); `off`
    /// keeps the cache in memory only. Default: `./canopy-cache` for a
    /// querier; in standalone `<data-dir>/cache` when the object store is
    /// S3, none when it is a local directory (the page cache serves it).
    #[arg(long, env = "CANOPY_CACHE_DIR")]
    cache_dir: Option<String>,
    /// Disk the part cache may use, in bytes.
    #[arg(long, env = "CANOPY_CACHE_DISK_BYTES", default_value_t = 2 << 30)]
    cache_disk_bytes: usize,
}

impl CacheArgs {
    /// Puts `store` behind the part cache. `default_dir` applies when
    /// `--cache-dir` is absent; if that directory cannot be used (read-only,
    /// or another process holds it) the cache runs in memory only, with a
    /// warning. A `--cache-dir` given explicitly must work.
    pub(crate) async fn open(
        &self,
        store: Arc<dyn object_store::ObjectStore>,
        default_dir: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Arc<canopy_querier::CachedStore>> {
        let cfg = |dir| canopy_querier::CacheConfig { memory_bytes: self.cache_memory_bytes, dir, disk_bytes: self.cache_disk_bytes };
        let cached = match self.cache_dir.as_deref() {
            Some("off") => canopy_querier::CachedStore::open(store, &cfg(None)).await?,
            Some(d) => canopy_querier::CachedStore::open(store, &cfg(Some(d.into()))).await?,
            None => match canopy_querier::CachedStore::open(store.clone(), &cfg(default_dir.clone())).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "the part cache's default disk tier is unusable; caching in memory only");
                    canopy_querier::CachedStore::open(store, &cfg(None)).await?
                }
            },
        };
        Ok(Arc::new(cached))
    }
}

/// Memtable flushing and the memory budget, for every process that runs an ingester.
#[derive(Debug, clap::Args)]
pub(crate) struct FlushArgs {
    /// Flush a shard's memtable at this many bytes at the latest (bounds a
    /// part's size and a WAL's replay); the memory budget flushes earlier.
    #[arg(long, env = "CANOPY_FLUSH_BYTES", default_value_t = 16 << 20)]
    flush_bytes: usize,
    /// Flush a shard's memtable when its oldest point is this many seconds old.
    #[arg(long, env = "CANOPY_FLUSH_INTERVAL_SECS", default_value_t = 60)]
    flush_interval_secs: u64,
    /// Memory for ingest: queued writes, memtables and in-flight flushes.
    /// Past half of it the largest memtables are flushed; writes beyond it
    /// get 429 / RESOURCE_EXHAUSTED. Default: a quarter of the machine's (or
    /// the cgroup's) memory.
    #[arg(long, env = "CANOPY_MEMORY_BUDGET_BYTES", alias = "memtable-bytes-max")]
    memory_budget_bytes: Option<usize>,
    /// Fault injection for tests: each flush waits this many milliseconds
    /// before uploading, as behind a slow object store.
    #[arg(long, env = "CANOPY_FAULT_STALL_UPLOADS_MS", default_value_t = 0, hide = true)]
    fault_stall_uploads_ms: u64,
}

impl FlushArgs {
    /// Sets these options on an ingester configuration.
    pub(crate) fn apply(&self, cfg: &mut canopy_ingester::IngesterConfig) {
        cfg.flush_bytes = self.flush_bytes;
        cfg.flush_interval = Duration::from_secs(self.flush_interval_secs);
        // The variable of the option this one replaced still counts.
        let old = std::env::var("CANOPY_MEMTABLE_BYTES_MAX").ok().and_then(|v| v.parse().ok());
        if self.memory_budget_bytes.is_none() && old.is_some() {
            tracing::warn!("CANOPY_MEMTABLE_BYTES_MAX is deprecated; it now sets CANOPY_MEMORY_BUDGET_BYTES");
        }
        cfg.memory_budget_bytes = self.memory_budget_bytes.or(old).unwrap_or_else(crate::machine_memory::default_ingest_budget);
        cfg.stall_uploads = Duration::from_millis(self.fault_stall_uploads_ms);
    }
}

/// Garbage-collection timing, for every process that runs compaction.
#[derive(Debug, clap::Args)]
pub(crate) struct GcArgs {
    /// Removed parts stay readable this long before deletion; must exceed the query timeout.
    #[arg(long, env = "CANOPY_GC_GRACE_SECS", default_value_t = 600)]
    gc_grace_secs: u64,
    /// Unreferenced objects younger than this are never collected as orphans.
    #[arg(long, env = "CANOPY_ORPHAN_MIN_AGE_SECS", default_value_t = 7200)]
    orphan_min_age_secs: u64,
    /// A compactor that dies mid-merge leaves its claim on the segment;
    /// others take the segment over after this many seconds. Must exceed the
    /// longest merge and stay below `--orphan-min-age-secs`.
    #[arg(long, env = "CANOPY_COMPACTION_CLAIM_TTL_SECS", default_value_t = 3600)]
    compaction_claim_ttl_secs: u64,
    /// Fault injection for tests: a merge waits this many milliseconds
    /// between its upload and its commit.
    #[arg(long, env = "CANOPY_FAULT_STALL_MERGE_COMMIT_MS", default_value_t = 0, hide = true)]
    fault_stall_merge_commit_ms: u64,
}

impl GcArgs {
    /// Compactor settings; fails unless the grace period outlasts any query
    /// (`query_timeout_secs`) and the orphan age outlasts any flush upload.
    pub(crate) fn compactor_config(&self, query_timeout_secs: u64) -> anyhow::Result<CompactorConfig> {
        anyhow::ensure!(
            self.gc_grace_secs > query_timeout_secs,
            "--gc-grace-secs ({}) must exceed the query timeout ({query_timeout_secs} s): a running query may still read removed parts",
            self.gc_grace_secs
        );
        anyhow::ensure!(
            self.orphan_min_age_secs > canopy_ingester::UPLOAD_COMMIT_WINDOW_SECS,
            "--orphan-min-age-secs must exceed the flush upload-to-commit window ({} s)",
            canopy_ingester::UPLOAD_COMMIT_WINDOW_SECS
        );
        anyhow::ensure!(
            self.compaction_claim_ttl_secs > 0 && self.compaction_claim_ttl_secs < self.orphan_min_age_secs,
            "--compaction-claim-ttl-secs ({}) must be above 0 and below --orphan-min-age-secs ({}): a merge's upload must not be collected as an orphan before its claim lapses",
            self.compaction_claim_ttl_secs,
            self.orphan_min_age_secs
        );
        Ok(CompactorConfig {
            gc_grace: Duration::from_secs(self.gc_grace_secs),
            orphan_min_age: Duration::from_secs(self.orphan_min_age_secs),
            claim_ttl: Duration::from_secs(self.compaction_claim_ttl_secs),
            stall_before_commit: Duration::from_millis(self.fault_stall_merge_commit_ms),
            ..CompactorConfig::default()
        })
    }
}

/// Agent protocols of a liaison: their extra ports, groups and limits.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
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
    /// Most samples (points) in one agent request.
    #[arg(long, env = "CANOPY_AGENT_SAMPLES_MAX", default_value_t = 200_000)]
    agent_samples_max: usize,
    /// Most bytes one agent request may expand to once each sample carries
    /// its series' labels; checked before expanding.
    #[arg(long, env = "CANOPY_AGENT_EXPANDED_BYTES_MAX", default_value_t = 128 << 20)]
    agent_expanded_bytes_max: usize,
    /// Most samples one Prometheus remote-read request may return; more is
    /// refused with 429 rather than held in memory.
    #[arg(long, env = "CANOPY_REMOTE_READ_SAMPLES_MAX", default_value_t = 5_000_000)]
    remote_read_samples_max: usize,
    /// Seconds an HTTP client has to send a request's headers, and again its
    /// body (a slower one gets 408 and frees its request slot).
    #[arg(long, env = "CANOPY_HTTP_READ_TIMEOUT_SECS", default_value_t = 30)]
    http_read_timeout_secs: u64,
}

impl AgentArgs {
    /// The gateway's agent settings.
    pub(crate) fn config(&self) -> AgentConfig {
        AgentConfig {
            prometheus_group: self.prometheus_group.clone(),
            otlp_group: self.otlp_group.clone(),
            influx_group: self.influx_group.clone(),
            series_per_measure_max: self.agent_series_max,
            labels_per_series_max: self.agent_labels_max,
            label_bytes_max: self.agent_label_bytes_max,
            body_bytes_max: self.agent_body_bytes_max,
            samples_per_request_max: self.agent_samples_max,
            expanded_bytes_max: self.agent_expanded_bytes_max,
            read_samples_max: self.remote_read_samples_max,
            ..AgentConfig::default()
        }
    }

    /// The liaison's listen addresses around the given main ports.
    pub(crate) fn liaison_config(
        &self,
        grpc_addr: SocketAddr,
        http_addr: SocketAddr,
        grpc_limits: &GrpcLimitArgs,
    ) -> anyhow::Result<LiaisonConfig> {
        let http_read_timeout = Duration::from_secs(self.http_read_timeout_secs.max(1));
        let optional = |s: &str| -> anyhow::Result<Option<SocketAddr>> { if s == "off" { Ok(None) } else { Ok(Some(s.parse()?)) } };
        Ok(LiaisonConfig {
            grpc_addr,
            http_addr,
            otlp_grpc_addr: optional(&self.otlp_grpc_addr)?,
            otlp_http_addr: optional(&self.otlp_http_addr)?,
            influx_addr: optional(&self.influx_addr)?,
            http_read_timeout,
            tls: None,
            grpc_limits: grpc_limits.limits(http_read_timeout),
        })
    }
}

/// Limits of a process's gRPC services (`canopy_liaison::GrpcLimits`).
#[derive(Debug, clap::Args)]
pub(crate) struct GrpcLimitArgs {
    /// gRPC calls in progress at once, across every connection and port
    /// (health checks aside); past it calls get RESOURCE_EXHAUSTED.
    #[arg(long, env = "CANOPY_GRPC_CALLS_MAX", default_value_t = canopy_liaison::GRPC_CALLS_DEFAULT)]
    grpc_calls_max: usize,
    /// Bytes of gRPC request bodies received and not yet decoded, across
    /// every call; past it calls get RESOURCE_EXHAUSTED. Keep it above the
    /// largest request (64 MiB on a liaison, 256 MiB between nodes).
    #[arg(long, env = "CANOPY_GRPC_IN_FLIGHT_BYTES_MAX", default_value_t = canopy_liaison::GRPC_IN_FLIGHT_BYTES_DEFAULT)]
    grpc_in_flight_bytes_max: usize,
}

impl GrpcLimitArgs {
    /// The process's limits; a request message has `read_timeout` to arrive.
    pub(crate) fn limits(&self, read_timeout: Duration) -> std::sync::Arc<canopy_liaison::GrpcLimits> {
        canopy_liaison::GrpcLimits::new(self.grpc_calls_max, self.grpc_in_flight_bytes_max, read_timeout)
    }
}

/// Client authentication of a liaison (`canopy_liaison::auth`).
#[derive(Debug, clap::Args)]
pub(crate) struct AuthArgs {
    /// Require a token of every request but health checks: a file of
    /// `ROLE SHA256HEX` lines (role `read`, `write` or `admin`; the hex
    /// SHA-256 of the token, e.g. `printf %s TOKEN | sha256sum`; `#`
    /// comments). Without it, requests are not authenticated.
    #[arg(long, env = "CANOPY_AUTH_TOKENS_FILE")]
    auth_tokens_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    /// Sets the tokens on the gateway; without them, warns if any of the
    /// liaison's ports listens beyond loopback.
    pub(crate) fn apply(&self, gw: canopy_liaison::Gateway, cfg: &LiaisonConfig) -> anyhow::Result<canopy_liaison::Gateway> {
        if let Some(path) = &self.auth_tokens_file {
            let tokens = canopy_liaison::auth::Tokens::load(path).map_err(anyhow::Error::msg)?;
            return Ok(gw.with_auth(tokens));
        }
        let addrs = [Some(cfg.grpc_addr), Some(cfg.http_addr), cfg.otlp_grpc_addr, cfg.otlp_http_addr, cfg.influx_addr];
        if let Some(open) = addrs.into_iter().flatten().find(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                addr = %open,
                "no --auth-tokens-file: anyone who reaches {open} can write, read and delete data; set one or listen on 127.0.0.1"
            );
        }
        Ok(gw)
    }
}

/// TLS on a liaison's client ports.
#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// PEM certificate chain for TLS on every client port (HTTP, gRPC, OTLP,
    /// InfluxDB); reloaded when the file changes. Needs `--tls-key`.
    #[arg(long, env = "CANOPY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "CANOPY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// Loads the certificate (and starts watching its files) when set.
    pub(crate) fn apply(&self, cfg: &mut LiaisonConfig) -> anyhow::Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let tls = canopy_liaison::tls::Tls::load(cert, key).map_err(anyhow::Error::msg)?;
            tls.spawn_reloader();
            cfg.tls = Some(tls);
        }
        Ok(())
    }
}

/// Prints the liaison's machine-readable ready line (scripts and tests read it).
pub(crate) fn announce_liaison(bound: &canopy_liaison::Bound, extra: &str) {
    let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    println!(
        "READY http={} grpc={} otlp_grpc={} otlp_http={} influx={}{extra}",
        bound.http,
        bound.grpc,
        show(bound.otlp_grpc),
        show(bound.otlp_http),
        show(bound.influx)
    );
}
