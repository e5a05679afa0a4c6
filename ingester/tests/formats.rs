//! Golden fixtures of the WAL: a segment written by each version of the
//! record format, checked in and replayed by today's code.
//! `CANOPY_WRITE_FIXTURES=1 cargo test -p canopy-ingester --test formats --
//! --ignored` writes the current version's segment; older ones never change.

use std::path::PathBuf;
use std::sync::Arc;

use canopy_ingester::wal::{Wal, WalBatch, decode_batch, encode_batch};
use canopy_model::{ColumnLayout, FieldVal, Point, TagVal};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The batches every WAL fixture holds, one per record.
fn batches() -> Vec<WalBatch> {
    let layout = Arc::new(ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: vec![("v".into(), 4), ("n".into(), 2)] });
    (0..3)
        .map(|r| WalBatch {
            group: "g".into(),
            measure: "cpu".into(),
            revision: 5,
            segment_nanos: 3_600_000_000_000,
            layout: layout.clone(),
            points: (0..4)
                .map(|i| Point {
                    series: 100 + i as u64,
                    shard: 1,
                    ts: 1_700_000_000_000_000_000 + r * 10 + i,
                    version: r,
                    tags: vec![TagVal::Str(format!("host-{i}"))].into(),
                    fields: vec![FieldVal::Float(r as f64 + 0.5), if i % 2 == 0 { FieldVal::Int(i) } else { FieldVal::Null }].into(),
                })
                .collect(),
        })
        .collect()
}

#[test]
#[ignore = "writes the current version's fixture"]
fn write_current_fixture() {
    if std::env::var_os("CANOPY_WRITE_FIXTURES").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
    let payloads: Vec<Vec<u8>> = batches().iter().map(encode_batch).collect();
    wal.append(&payloads).unwrap();
    drop(wal);
    let version = payloads[0][0];
    let out = fixture(&format!("wal-v{version}"));
    std::fs::create_dir_all(&out).unwrap();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), out.join(f.file_name())).unwrap();
    }
}

/// Replays a fixture segment directory (copied: recovery may rewrite it).
fn replay(name: &str) -> Vec<WalBatch> {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let (_, rec) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
    assert_eq!(rec.truncated_bytes, 0, "{name}: a clean segment");
    rec.records.iter().map(|(seq, p)| decode_batch(p).unwrap_or_else(|e| panic!("{name}: record {seq}: {e:?}"))).collect()
}

#[test]
fn wal_v1_records_replay() {
    assert_eq!(replay("wal-v1"), batches());
}

#[test]
fn wal_v2_records_replay() {
    assert_eq!(replay("wal-v2"), batches());
}

/// A data directory and a catalog from the builds before WAL ids: the
/// catalog (format 1) holds one `wal_watermark`, the directory no `wal_id`.
/// After the upgrade only the WAL records above that watermark replay.
#[tokio::test]
async fn an_upgraded_data_directory_replays_only_what_its_old_catalog_lacks() {
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal/g/0001");
    std::fs::create_dir_all(&wal_dir).unwrap();
    for f in std::fs::read_dir(fixture("wal-v1")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), wal_dir.join(f.file_name())).unwrap();
    }
    let body =
        br#"{"group":"g","shard":1,"version":1,"epoch":1,"wal_watermark":2,"next_part_id":1,"parts":[],"claims":[],"pending_deletes":[]}"#;
    let mut cat = b"CNCT".to_vec();
    cat.extend_from_slice(&1u32.to_le_bytes());
    cat.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    cat.extend_from_slice(body);
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    store.put(&canopy_storage::paths::catalog_version("g", 1, 1), PutPayload::from(cat)).await.unwrap();

    let ing = canopy_ingester::Ingester::open(canopy_ingester::IngesterConfig::new(dir.path().to_path_buf()), store).await.unwrap();
    assert_eq!(ing.wal_id(), canopy_storage::LEGACY_WAL_ID);
    let want = batches().remove(2);
    let snap = ing.snapshot("g", 1, "cpu", &want.layout, None, &|_| true).await.unwrap();
    let got: Vec<Point> = snap.rows.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, want.points, "records 1 and 2 are in parts already; only record 3 replays");
}
