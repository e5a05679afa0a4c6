//! Recovery at the ingester level: points only in the WAL come back after the
//! process state is dropped without a flush, and a flush right after recovery
//! lays parts out by the group's segments and commits the watermark once.

use std::sync::Arc;

use canopy_api::v1::*;
use canopy_ingester::{Ingester, IngesterConfig};
use canopy_model::{FieldVal, MeasureSchema, TagVal, testing, validate_batch};
use canopy_storage::CatalogStore;

const HOUR: i64 = 3_600_000_000_000;

fn schema() -> MeasureSchema {
    testing::compile(
        &testing::group("g", 1, 1, 1),
        &testing::measure("g", "m", &[("s", TagType::String)], &[("v", FieldType::Int)], &["s"]),
    )
}

#[tokio::test]
async fn wal_only_points_survive_and_flush_by_segment_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let schema = schema();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let start = (now / HOUR - 3) * HOUR;
    // 3 hours of points, one per minute: three one-hour segments.
    let dps: Vec<DataPointValue> = (0..180)
        .map(|i| DataPointValue {
            timestamp: Some(canopy_model::nanos_to_timestamp(start + i * 60_000_000_000)),
            tag_families: vec![TagFamilyForWrite { tags: vec![TagVal::Str("a".into()).to_proto()] }],
            fields: vec![FieldVal::Int(i).to_proto()],
            version: 0,
        })
        .collect();
    let (points, rejected) = validate_batch(&schema, &dps, now);
    assert!(rejected.is_empty());
    {
        let ing = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store.clone()).await.unwrap();
        ing.write(&schema, points[..100].to_vec()).await.unwrap();
        ing.write(&schema, points[100..].to_vec()).await.unwrap();
        // Dropped without a flush: only the WAL holds the points.
    }
    let ing = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store.clone()).await.unwrap();
    assert!(ing.memtable_bytes() > 0, "the WAL was replayed");
    let snap = ing.snapshot("g", 0, "m", &schema.layout, None, &|_| true).await.unwrap();
    assert_eq!(snap.rows.len(), 180);
    assert_eq!(ing.flush_all().await.unwrap(), 3, "one part per one-hour segment");

    let cat = CatalogStore::new(store.clone()).load_latest("g", 0).await.unwrap();
    assert_eq!(cat.watermark(ing.wal_id()), 2, "both WAL records are covered");
    for p in &cat.parts {
        assert_eq!(p.segment_end - p.segment_start, HOUR);
        assert!(p.min_ts >= p.segment_start && p.max_ts < p.segment_end);
    }
    assert_eq!(cat.parts.iter().map(|p| p.rows).sum::<u64>(), 180);
    let snap = ing.snapshot("g", 0, "m", &schema.layout, None, &|_| true).await.unwrap();
    assert!(snap.rows.is_empty(), "flushed points leave the memtable with the same commit");
    drop(ing);

    // Nothing is replayed twice after the commit.
    let ing = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store).await.unwrap();
    assert_eq!(ing.memtable_bytes(), 0);
    assert_eq!(ing.flush_all().await.unwrap(), 0);
}

#[tokio::test]
async fn a_batch_larger_than_a_wal_record_is_split_and_fully_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let schema = schema();
    let now = canopy_model::now_nanos();
    // 4,200 points with (almost) 64 KiB entity values: about 275 MB once
    // encoded, over the 256 MiB a WAL record may hold.
    let value_bytes = canopy_model::VALUE_BYTES_MAX - 64;
    let n = 4_200;
    let dps: Vec<DataPointValue> = (0..n)
        .map(|i| {
            let mut s = format!("{i:08}");
            s.push_str(&"x".repeat(value_bytes - s.len()));
            DataPointValue {
                timestamp: Some(canopy_model::nanos_to_timestamp(now - HOUR + i)),
                tag_families: vec![TagFamilyForWrite { tags: vec![TagVal::Str(s).to_proto()] }],
                fields: vec![FieldVal::Int(i).to_proto()],
                version: 0,
            }
        })
        .collect();
    let (points, rejected) = validate_batch(&schema, &dps, now);
    assert!(rejected.is_empty(), "{:?}", rejected.first());
    drop(dps);
    {
        let ing = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store.clone()).await.unwrap();
        ing.write(&schema, points).await.unwrap();
        // Dropped without a flush: only the WAL holds the points.
    }
    let ing = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store).await.unwrap();
    let snap = ing.snapshot("g", 0, "m", &schema.layout, None, &|_| true).await.unwrap();
    assert_eq!(snap.rows.len(), n as usize, "every acknowledged point is replayed");
    let mut values: Vec<i64> = snap.rows.iter().map(|(_, p)| p.fields[0].as_f64().unwrap() as i64).collect();
    values.sort_unstable();
    assert_eq!(values, (0..n).collect::<Vec<_>>());
}
