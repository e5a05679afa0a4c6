//! `canopy compactor`: compaction rounds as a process of their own, next to
//! a standalone server or (with etcd metadata, later) a cluster. Claims in
//! the catalog keep several compactors off the same segment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_compactor::{Compactor, CompactorConfig};
use canopy_meta::{EmbeddedStore, SchemaRegistry};
use canopy_model::GroupSpec;

use crate::standalone::ObjectStoreArgs;

/// Options of `canopy compactor`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompactorArgs {
    /// Directory of the embedded metadata (`<standalone data-dir>/meta`);
    /// re-read every round so new groups are picked up.
    #[arg(long, env = "CANOPY_META_DIR")]
    meta_dir: PathBuf,
    #[command(flatten)]
    store: ObjectStoreArgs,
    /// Seconds between rounds.
    #[arg(long, env = "CANOPY_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    interval_secs: u64,
    /// Removed parts stay readable this long; must exceed the servers' query timeout.
    #[arg(long, env = "CANOPY_GC_GRACE_SECS", default_value_t = 600)]
    gc_grace_secs: u64,
    /// Unreferenced objects younger than this are never collected as orphans.
    #[arg(long, env = "CANOPY_ORPHAN_MIN_AGE_SECS", default_value_t = 7200)]
    orphan_min_age_secs: u64,
    /// Run one round and exit.
    #[arg(long)]
    once: bool,
}

/// Runs compaction rounds until SIGINT/SIGTERM (or once).
pub(crate) async fn run(a: CompactorArgs) -> anyhow::Result<()> {
    let store = a.store.open(None)?;
    let cfg = CompactorConfig {
        gc_grace: Duration::from_secs(a.gc_grace_secs),
        orphan_min_age: Duration::from_secs(a.orphan_min_age_secs),
        ..CompactorConfig::default()
    };
    tracing::info!(holder = %cfg.holder, "canopy compactor started");
    let compactor = Compactor::new(cfg, store);
    loop {
        let registry = SchemaRegistry::new(Arc::new(EmbeddedStore::open(&a.meta_dir)?));
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
