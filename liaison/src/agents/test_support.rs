//! Gateways for the agent protocols' unit tests: real ingester, querier and
//! compactor over an in-memory object store, metadata in a temp directory.

use std::sync::Arc;

use canopy_meta::{EmbeddedStore, SchemaRegistry};

use crate::service::Gateway;

/// Two gateways (as two liaisons) over one metadata store and one data plane.
pub(crate) async fn two_gateways(dir: &std::path::Path) -> (Gateway, Gateway) {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let meta = Arc::new(EmbeddedStore::open(&dir.join("meta")).unwrap());
    let ingester = canopy_ingester::Ingester::open(canopy_ingester::IngesterConfig::new(dir.to_path_buf()), store.clone()).await.unwrap();
    let data = Arc::new(crate::LocalDataPlane {
        ingester,
        querier: Arc::new(canopy_querier::Querier::new(Default::default(), store.clone())),
        compactor: Arc::new(canopy_compactor::Compactor::new(Default::default(), store)),
    });
    let a = Gateway::new(Arc::new(SchemaRegistry::new(meta.clone())), data.clone());
    let b = Gateway::new(Arc::new(SchemaRegistry::new(meta)), data);
    (a, b)
}
