//! What the liaison's integration tests share: a gateway over the real
//! in-process data plane (ingester, querier, compactor) on any object store,
//! and replayable seeds for randomized tests.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use canopy_compactor::{Compactor, CompactorConfig};
use canopy_ingester::{Ingester, IngesterConfig};
use canopy_liaison::{Gateway, LocalDataPlane};
use canopy_meta::{EmbeddedStore, SchemaRegistry};
use canopy_querier::{Querier, QuerierConfig};
use object_store::ObjectStore;

/// One process's worth of Canopy, in-process.
pub struct Stack {
    pub gw: Gateway,
    pub ingester: Arc<Ingester>,
    pub querier: Arc<Querier>,
    pub store: Arc<dyn ObjectStore>,
}

/// Settings of the roles of a [`Stack`], defaults unless a test changes them.
pub struct Settings {
    pub ingester: IngesterConfig,
    pub querier: QuerierConfig,
    pub compactor: CompactorConfig,
}

/// A stack with its metadata and WAL under `dir` (the same `dir` and store
/// again is a restart); `tune` adjusts the default settings.
pub async fn stack(dir: &Path, store: Arc<dyn ObjectStore>, tune: impl FnOnce(&mut Settings)) -> Stack {
    let mut s = Settings {
        ingester: IngesterConfig::new(dir.to_path_buf()),
        querier: QuerierConfig::default(),
        compactor: CompactorConfig::default(),
    };
    tune(&mut s);
    let registry = Arc::new(SchemaRegistry::new(Arc::new(EmbeddedStore::open(&dir.join("meta")).unwrap())));
    let ingester = Ingester::open(s.ingester, store.clone()).await.unwrap();
    let querier = Arc::new(Querier::new(s.querier, store.clone()));
    let compactor = Arc::new(Compactor::new(s.compactor, store.clone()));
    let data = Arc::new(LocalDataPlane { ingester: ingester.clone(), querier: querier.clone(), compactor });
    Stack { gw: Gateway::new(registry, data), ingester, querier, store }
}

/// A seed for a randomized test: `CANOPY_TEST_SEED` replays a run, else the clock.
pub fn seed() -> u64 {
    let seed = std::env::var("CANOPY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(canopy_model::now_nanos() as u64 | 1);
    println!("seed {seed} (CANOPY_TEST_SEED={seed} replays this run)");
    seed
}
