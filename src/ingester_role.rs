//! `canopy ingester`: owns the shards dealt to it, takes routed writes into
//! its WALs and memtables, flushes parts, and serves shard snapshots.

use std::path::PathBuf;

use canopy_api::cluster::v1::ingester_service_server::IngesterServiceServer;
use canopy_cluster::metrics::RoleMetrics;
use canopy_cluster::{INTERNAL_MESSAGE_BYTES_MAX, IngesterRpc, Pacing, Role, ShardManager};
use canopy_ingester::{Ingester, IngesterConfig};

use crate::args::{FlushArgs, ObjectStoreArgs};
use crate::node::{Node, NodeArgs};

/// Options of `canopy ingester`.
#[derive(Debug, clap::Args)]
pub(crate) struct IngesterArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    store: ObjectStoreArgs,
    /// Local directory for WALs (NVMe in production) and the WAL id.
    #[arg(long, env = "CANOPY_DATA_DIR", default_value = "canopy-ingester")]
    data_dir: PathBuf,
    #[command(flatten)]
    flush: FlushArgs,
    /// Only ingesters with these labels (`k=v,...`) are dealt shards. Every
    /// ingester must be given the same selector.
    #[arg(long, env = "CANOPY_INGESTER_SELECTOR", default_value = "")]
    ingester_selector: String,
    /// Shard handovers this ingester starts while earlier ones are still in
    /// flight (released, not yet taken); a leaving ingester is not held back.
    #[arg(long, env = "CANOPY_MAX_HANDOFFS_PER_INGESTER", default_value_t = 2)]
    max_handoffs_per_ingester: usize,
    /// Shard handovers in flight across the cluster before ingesters wait.
    #[arg(long, env = "CANOPY_MAX_HANDOFFS", default_value_t = 16)]
    max_handoffs: usize,
}

/// Runs until SIGINT/SIGTERM, then hands every shard over (flushing it) and exits.
pub(crate) async fn run(a: IngesterArgs) -> anyhow::Result<()> {
    let selector = crate::node::selector(&a.ingester_selector)?;
    let (store, store_counters) = a.store.open_for_commits(None).await?;
    let mut cfg = IngesterConfig::new(a.data_dir.clone());
    a.flush.apply(&mut cfg);
    cfg.implicit_epoch = None;
    let ingester = Ingester::open(cfg, store).await?;
    let flusher = ingester.spawn_flusher();

    let mut node = Node::start(&a.node, vec![Role::Ingester]).await?;
    let metrics = RoleMetrics::new("ingester");
    metrics.count_store(store_counters);
    ingester_gauges(&metrics, &ingester);
    {
        let ing = ingester.clone();
        metrics.gauge("canopy_owned_shards", "Shards this ingester owns.", move || ing.owned_count() as f64);
    }
    let rpc = IngesterRpc { ingester: ingester.clone(), metrics: metrics.clone() };
    let service = IngesterServiceServer::new(rpc)
        .max_decoding_message_size(INTERNAL_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(INTERNAL_MESSAGE_BYTES_MAX);
    let router = tonic::transport::Server::builder().add_service(node.internal(service));
    let serving = node.serve("ingester", Some(router), metrics).await?;
    let pacing = Pacing { per_ingester: a.max_handoffs_per_ingester.max(1), cluster: a.max_handoffs.max(1) };
    let manager = ShardManager::new(node.view.clone(), ingester.clone(), serving.registration.clone(), selector, pacing).await;
    let rounds = manager.spawn();

    crate::signals::received(1).await;
    tracing::info!("leaving: handing shards over");
    // A flush that cannot finish (object store down) keeps the node here;
    // a second signal exits anyway (main): the WAL keeps the points, and
    // they are replayed and flushed when this node is dealt the shards again.
    manager.leave().await;
    rounds.abort();
    flusher.abort();
    serving.stop().await;
    tracing::info!("every shard handed over; bye");
    Ok(())
}

/// The gauges of an ingester, in whichever process runs one: memory against
/// its budget, and last-value cache answers.
pub(crate) fn ingester_gauges(metrics: &RoleMetrics, ingester: &std::sync::Arc<Ingester>) {
    let ing = ingester.clone();
    metrics.gauge("canopy_memtable_bytes", "Bytes held in memtables.", move || ing.memtable_bytes() as f64);
    let ing = ingester.clone();
    metrics.gauge(
        "canopy_ingest_memory_bytes",
        "Bytes charged to the ingest memory budget: queued writes, memtables, flushes.",
        move || ing.memory_used() as f64,
    );
    let ing = ingester.clone();
    metrics.gauge("canopy_ingest_memory_budget_bytes", "The ingest memory budget.", move || ing.memory_budget() as f64);
    let ing = ingester.clone();
    metrics.gauge("canopy_last_value_answers", "Shard queries answered by last-value caches, since start.", move || {
        ing.last_value_hits() as f64
    });
}
