//! `canopy querier`: runs shard fragments of queries over object storage.

use std::sync::Arc;

use canopy_api::cluster::v1::querier_service_server::QuerierServiceServer;
use canopy_cluster::metrics::RoleMetrics;
use canopy_cluster::{INTERNAL_MESSAGE_BYTES_MAX, QuerierRpc, Role};
use canopy_querier::{Querier, QuerierConfig};
use canopy_storage::CatalogStore;

use crate::args::{CacheArgs, ObjectStoreArgs};
use crate::node::{Node, NodeArgs};

/// Options of `canopy querier`.
#[derive(Debug, clap::Args)]
pub(crate) struct QuerierArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    store: ObjectStoreArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs until SIGINT/SIGTERM.
pub(crate) async fn run(a: QuerierArgs) -> anyhow::Result<()> {
    let (store, store_counters) = a.store.open(None)?;
    let mut node = Node::start(&a.node, vec![Role::Querier]).await?;
    let metrics = RoleMetrics::new("querier");
    metrics.count_store(store_counters);
    let cached = a.cache.open(store.clone(), Some("canopy-cache".into())).await?;
    metrics.count_cache(cached.counters());
    let querier = Arc::new(Querier::new(QuerierConfig::default(), cached.clone()));
    let rpc = QuerierRpc::new(querier, CatalogStore::new(store), metrics.clone());
    let service = QuerierServiceServer::new(rpc)
        .max_decoding_message_size(INTERNAL_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(INTERNAL_MESSAGE_BYTES_MAX);
    let router = tonic::transport::Server::builder().add_service(node.internal(service));
    let serving = node.serve("querier", Some(router), metrics).await?;
    crate::signals::received(1).await;
    serving.stop().await;
    cached.close().await;
    Ok(())
}
