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

/// A printed, replayable seed (`CANOPY_TEST_SEED`) for randomized tests.
#[allow(unused_imports)] // not every test binary is randomized
pub use canopy_model::testing::seed;

/// An hour in nanoseconds.
pub const HOUR: i64 = 3_600_000_000_000;

/// Creates the measure most of these tests use: group `g` (`shards` shards,
/// one-hour segments, a day's TTL) with measure `m` — entity tag `s` (int),
/// with `with_z` a tag `z` (string, free to change between versions), and
/// field `v` (int).
pub async fn create_g_m(gw: &Gateway, shards: u32, with_z: bool) {
    use canopy_api::v1::{FieldType, TagType};
    use canopy_model::testing;
    gw.create_group(Some(testing::group("g", shards, 1, 1))).await.unwrap();
    let tags: &[(&str, TagType)] = if with_z { &[("s", TagType::Int), ("z", TagType::String)] } else { &[("s", TagType::Int)] };
    gw.create_measure(Some(testing::measure("g", "m", tags, &[("v", FieldType::Int)], &["s"]))).await.unwrap();
}
