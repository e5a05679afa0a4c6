//! Shard ownership at the ingester level: the epoch fences a stale owner's
//! commits, a graceful release hands every acknowledged point to the
//! catalog, and an owner that crashed gets its unflushed points back when it
//! re-acquires the shard, even after someone else owned it in between.

use std::sync::Arc;

use canopy_api::v1::*;
use canopy_ingester::{IngestError, Ingester, IngesterConfig};
use canopy_model::{FieldVal, MeasureSchema, Point, TagVal, testing, validate_batch};
use canopy_storage::{CatalogStore, StorageError};
use object_store::ObjectStore;

fn schema() -> MeasureSchema {
    testing::compile(
        &testing::group("g", 1, 1, 1),
        &testing::measure("g", "m", &[("s", TagType::String)], &[("v", FieldType::Int)], &["s"]),
    )
}

/// Points `from..to`, one per millisecond of one series.
fn points(schema: &MeasureSchema, from: i64, to: i64) -> Vec<Point> {
    let now = canopy_model::now_nanos();
    let base = now - 60_000_000_000;
    let dps: Vec<DataPointValue> = (from..to)
        .map(|i| DataPointValue {
            timestamp: Some(canopy_model::nanos_to_timestamp(base + i * 1_000_000)),
            tag_families: vec![TagFamilyForWrite { tags: vec![TagVal::Str("a".into()).to_proto()] }],
            fields: vec![FieldVal::Int(i).to_proto()],
            version: 0,
        })
        .collect();
    let (pts, rejected) = validate_batch(schema, &dps, now);
    assert!(rejected.is_empty());
    pts
}

async fn cluster_ingester(dir: &std::path::Path, store: Arc<dyn ObjectStore>) -> Arc<Ingester> {
    let mut cfg = IngesterConfig::new(dir.to_path_buf());
    cfg.implicit_epoch = None;
    Ingester::open(cfg, store).await.unwrap()
}

/// Every value visible through `ing`: parts of its pinned catalog version
/// plus its memtable points above that version's watermark.
async fn visible(ing: &Ingester, store: &Arc<dyn ObjectStore>, schema: &MeasureSchema) -> Vec<i64> {
    let snap = ing.snapshot("g", 0, "m", &schema.layout, None, &|_| true).await.unwrap();
    let querier = canopy_querier::Querier::new(Default::default(), store.clone());
    let now = canopy_model::now_nanos();
    let time_range = Some(TimeRange {
        begin: Some(canopy_model::nanos_to_timestamp(now - 3_600_000_000_000)),
        end: Some(canopy_model::nanos_to_timestamp(now + 1)),
    });
    let req = QueryRequest {
        groups: vec!["g".into()],
        name: "m".into(),
        time_range,
        field_projection: Some(FieldProjection { names: vec!["v".into()] }),
        ..Default::default()
    };
    let plan = canopy_model::QueryPlan::compile(Arc::new(schema.clone()), &req, canopy_model::now_nanos()).unwrap();
    let mut rows = querier.scan_parts(&snap.catalog, &plan).await.unwrap();
    rows.extend(snap.rows);
    let mut v: Vec<i64> = rows
        .iter()
        .map(|(_, p)| match p.fields[0] {
            FieldVal::Int(i) => i,
            ref f => panic!("unexpected field {f:?}"),
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_writer_with_a_stale_epoch_cannot_commit() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let schema = schema();
    let a = cluster_ingester(da.path(), store.clone()).await;
    let b = cluster_ingester(db.path(), store.clone()).await;

    assert!(matches!(a.write(&schema, points(&schema, 0, 10)).await, Err(IngestError::NotOwner(_))), "no write before acquire");
    a.acquire("g", 0, 1).await.unwrap();
    a.write(&schema, points(&schema, 0, 10)).await.unwrap();
    // B takes the shard over without A letting go (A is partitioned away).
    b.acquire("g", 0, 2).await.unwrap();
    let err = a.flush_all().await.unwrap_err();
    assert!(matches!(err, IngestError::Storage(StorageError::Fenced { current: 2, mine: 1, .. })), "{err}");
    let cat = CatalogStore::new(store.clone()).load_latest("g", 0).await.unwrap();
    assert_eq!(cat.epoch, 2);
    assert!(cat.parts.is_empty(), "the stale owner published nothing");
    // An acquire under an epoch older than the catalog's is refused too.
    let c = cluster_ingester(tempfile::tempdir().unwrap().path(), store.clone()).await;
    assert!(matches!(c.acquire("g", 0, 1).await, Err(IngestError::Storage(StorageError::Fenced { .. }))));
}

#[tokio::test]
async fn a_graceful_release_hands_every_point_to_the_next_owner() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let schema = schema();
    let a = cluster_ingester(da.path(), store.clone()).await;
    let b = cluster_ingester(db.path(), store.clone()).await;
    a.acquire("g", 0, 1).await.unwrap();
    a.write(&schema, points(&schema, 0, 50)).await.unwrap();
    a.flush_all().await.unwrap();
    a.write(&schema, points(&schema, 50, 100)).await.unwrap();

    a.release("g", 0).await.unwrap();
    assert!(matches!(a.write(&schema, points(&schema, 100, 101)).await, Err(IngestError::NotOwner(_))));
    assert!(a.shards_on_disk().unwrap().is_empty(), "the released shard's WAL is gone");
    b.acquire("g", 0, 2).await.unwrap();
    b.write(&schema, points(&schema, 100, 150)).await.unwrap();
    assert_eq!(visible(&b, &store, &schema).await, (0..150).collect::<Vec<_>>());

    // A takes it back later: its WAL numbering continues after its old
    // watermark, so nothing it writes now is mistaken for flushed data.
    b.release("g", 0).await.unwrap();
    a.acquire("g", 0, 3).await.unwrap();
    a.write(&schema, points(&schema, 150, 160)).await.unwrap();
    drop(a);
    let a = cluster_ingester(da.path(), store.clone()).await;
    a.acquire("g", 0, 4).await.unwrap();
    assert_eq!(visible(&a, &store, &schema).await, (0..160).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_crashed_owner_replays_its_points_when_it_takes_the_shard_back() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let schema = schema();
    {
        let a = cluster_ingester(da.path(), store.clone()).await;
        a.acquire("g", 0, 1).await.unwrap();
        a.write(&schema, points(&schema, 0, 30)).await.unwrap();
        a.flush_all().await.unwrap();
        a.write(&schema, points(&schema, 30, 60)).await.unwrap();
        // Crash: dropped without a flush or release.
    }
    let b = cluster_ingester(db.path(), store.clone()).await;
    b.acquire("g", 0, 2).await.unwrap();
    b.write(&schema, points(&schema, 60, 90)).await.unwrap();
    b.flush_all().await.unwrap();
    b.write(&schema, points(&schema, 90, 100)).await.unwrap();
    b.release("g", 0).await.unwrap();

    let a = cluster_ingester(da.path(), store.clone()).await;
    assert_eq!(a.shards_on_disk().unwrap(), vec![("g".to_string(), 0)], "the crashed owner still holds a WAL");
    a.acquire("g", 0, 3).await.unwrap();
    assert_eq!(visible(&a, &store, &schema).await, (0..100).collect::<Vec<_>>(), "each point exactly once");
    a.flush_all().await.unwrap();
    assert_eq!(visible(&a, &store, &schema).await, (0..100).collect::<Vec<_>>());
    let cat = CatalogStore::new(store.clone()).load_latest("g", 0).await.unwrap();
    assert_eq!(cat.watermarks.len(), 2, "one watermark per WAL that wrote the shard: {:?}", cat.watermarks);
}
