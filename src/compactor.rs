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

use canopy_cluster::Role;
use canopy_cluster::metrics::RoleMetrics;

use crate::args::{GcArgs, ObjectStoreArgs};
use crate::node::{Node, NodeArgs};

/// Options of `canopy compactor`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompactorArgs {
    /// Directory of a standalone server's embedded metadata
    /// (`<standalone data-dir>/meta`); re-read every round. Without it the
    /// compactor joins a cluster: `--etcd-endpoints` and the node options
    /// apply, it registers as a `compactor` node and serves health and metrics.
    #[arg(long, env = "CANOPY_META_DIR", conflicts_with = "etcd_endpoints")]
    meta_dir: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
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
    let (store, store_counters) = a.store.open_for_commits(None).await?;
    let cfg = a.gc.compactor_config(a.query_timeout_secs)?;
    tracing::info!(holder = %cfg.holder, "canopy compactor started");
    let compactor = Compactor::new(cfg, store);
    // In a cluster: schemas from etcd, and a node registration with health
    // and metrics like every other role.
    let mut etcd: Option<Arc<dyn MetadataStore>> = None;
    let mut serving = None;
    if a.meta_dir.is_none() {
        let mut node = Node::start(&a.node, vec![Role::Compactor]).await?;
        let metrics = RoleMetrics::new("compactor");
        metrics.count_store(store_counters);
        serving = Some(node.serve("compactor", None, metrics).await?);
        etcd = Some(Arc::new(canopy_cluster::EtcdStore::new(node.view.client.clone())));
    }
    loop {
        // The embedded store is re-opened each round: the server owning it
        // rewrites its file, and this process must see new groups.
        let meta: Arc<dyn MetadataStore> = match (&etcd, &a.meta_dir) {
            (Some(e), _) => e.clone(),
            (None, Some(dir)) => Arc::new(EmbeddedStore::open(dir)?),
            (None, None) => unreachable!("a compactor without --meta-dir joins the cluster"),
        };
        let registry = SchemaRegistry::new(meta);
        let now = canopy_model::now_nanos() / 1_000_000;
        if let Err(e) = compactor.sweep_probes(now).await {
            tracing::warn!(error = %e, "sweeping stray start-up probes failed; will retry");
        }
        'groups: for g in registry.list_groups().await? {
            let spec = GroupSpec::compile(&g)?;
            for shard in 0..spec.shard_num {
                if crate::signals::stopping() {
                    // Between shards: nothing is left half done.
                    break 'groups;
                }
                match compactor.run_shard(&spec, shard, now).await {
                    Ok(r) if r != Default::default() => tracing::info!(group = %spec.name, shard, ?r, "compaction round"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(group = %spec.name, shard, error = %e, "compaction failed; will retry"),
                }
            }
        }
        if a.once || crate::signals::stopping() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(a.interval_secs)) => {}
            _ = crate::signals::received(1) => break,
        }
    }
    if let Some(s) = serving {
        s.stop().await;
    }
    Ok(())
}
