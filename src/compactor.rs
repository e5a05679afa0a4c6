//! `canopy compactor`: compaction rounds as a process of their own, next to
//! a standalone server (reading its embedded metadata) or in a cluster
//! (reading schemas from etcd). Claims in the catalog keep several
//! compactors off the same segment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_compactor::Compactor;
use canopy_meta::{EmbeddedStore, MetadataStore, SchemaRegistry};
use canopy_model::GroupSpec;

use crate::args::{GcArgs, ObjectStoreArgs};

/// Options of `canopy compactor`.
#[derive(Debug, clap::Args)]
#[group(id = "metadata", required = true, args = ["meta_dir", "etcd_endpoints"])]
pub(crate) struct CompactorArgs {
    /// Directory of a standalone server's embedded metadata
    /// (`<standalone data-dir>/meta`); re-read every round.
    #[arg(long, env = "CANOPY_META_DIR")]
    meta_dir: Option<PathBuf>,
    /// etcd endpoints of a cluster, comma-separated (instead of `--meta-dir`).
    #[arg(long, env = "CANOPY_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    #[command(flatten)]
    store: ObjectStoreArgs,
    /// Seconds between rounds.
    #[arg(long, env = "CANOPY_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    interval_secs: u64,
    #[command(flatten)]
    gc: GcArgs,
    /// The servers' query timeout, which the GC grace period must exceed.
    #[arg(long, env = "CANOPY_QUERY_TIMEOUT_SECS", default_value_t = 60)]
    query_timeout_secs: u64,
    /// Run one round and exit.
    #[arg(long)]
    once: bool,
}

/// Runs compaction rounds until SIGINT/SIGTERM (or once).
pub(crate) async fn run(a: CompactorArgs) -> anyhow::Result<()> {
    let store = a.store.open(None)?;
    let cfg = a.gc.compactor_config(a.query_timeout_secs)?;
    tracing::info!(holder = %cfg.holder, "canopy compactor started");
    let compactor = Compactor::new(cfg, store);
    let etcd: Option<Arc<dyn MetadataStore>> = if a.etcd_endpoints.is_empty() {
        None
    } else {
        Some(Arc::new(canopy_cluster::EtcdStore::new(canopy_cluster::connect(&a.etcd_endpoints).await?)))
    };
    loop {
        // The embedded store is re-opened each round: the server owning it
        // rewrites its file, and this process must see new groups.
        let meta: Arc<dyn MetadataStore> = match (&etcd, &a.meta_dir) {
            (Some(e), _) => e.clone(),
            (None, Some(dir)) => Arc::new(EmbeddedStore::open(dir)?),
            (None, None) => anyhow::bail!("--meta-dir or --etcd-endpoints is required"),
        };
        let registry = SchemaRegistry::new(meta);
        let now = canopy_model::now_nanos() / 1_000_000;
        for g in registry.list_groups().await? {
            let spec = GroupSpec::compile(&g)?;
            for shard in 0..spec.shard_num {
                match compactor.run_shard(&spec, shard, now).await {
                    Ok(r) if r != Default::default() => tracing::info!(group = %spec.name, shard, ?r, "compaction round"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(group = %spec.name, shard, error = %e, "compaction failed; will retry"),
                }
            }
        }
        if a.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(a.interval_secs)) => {}
            _ = crate::standalone::shutdown_signal() => return Ok(()),
        }
    }
}
