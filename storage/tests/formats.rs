//! Golden fixtures: one file per on-disk version of the catalog and the part
//! format, checked in and decoded by today's code. A format change that
//! forgets its version bump (or drops a reader for an old version) fails
//! here. `CANOPY_WRITE_FIXTURES=1 cargo test -p canopy-storage --test formats
//! -- --ignored` writes the current version's files; older ones never change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use canopy_model::{ColumnLayout, FieldVal, Point, TagVal};
use canopy_storage::part::{MeasureRows, PartIndex, Scan, encode_part, read_index, scan_part};
use canopy_storage::{CatalogState, CatalogStore, CompactionClaim, PartMeta, PendingDelete, paths};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const PART_PATH: &str = "parts/g/0000/1699999200/0000000000000001-00000001.arrow";
const SEGMENT: i64 = 1_699_999_200_000_000_000;
const HOUR: i64 = 3_600_000_000_000;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn layout() -> ColumnLayout {
    ColumnLayout { tags: vec![("d".into(), "host".into(), 1)], fields: vec![("v".into(), 4), ("n".into(), 2)] }
}

/// The points every part fixture holds: 3 series x 4 points.
fn points() -> Vec<Point> {
    let mut out = Vec::new();
    for s in 0..3u64 {
        for i in 0..4i64 {
            out.push(Point {
                series: 100 + s,
                shard: 0,
                ts: SEGMENT + i * 1_000_000_000,
                version: i,
                tags: vec![TagVal::Str(format!("host-{s}"))].into(),
                fields: vec![FieldVal::Float(s as f64 + i as f64 / 4.0), if i % 2 == 0 { FieldVal::Int(i) } else { FieldVal::Null }].into(),
            });
        }
    }
    out
}

/// The points of the second measure of the format-6 fixture: one series.
fn disk_points() -> Vec<Point> {
    points().into_iter().filter(|p| p.series == 101).map(|p| Point { series: 900, ..p }).collect()
}

/// The points of the third measure of the format-7 fixture: series named
/// by their host (each id is the hash of its host), as agent measures are.
fn named_points() -> Vec<Point> {
    let mut out: Vec<Point> = points().into_iter().map(|p| Point { series: canopy_model::series_id("mem", [&p.tags[0]]), ..p }).collect();
    out.sort_by_key(|p| (p.series, p.ts));
    out
}

/// The points of the fourth measure of the format-9 fixture: one series
/// long enough for its fields to be walk-coded — a gauge of hundredths
/// clamped to [0, 100] by steps of up to 10, and an integer random walk.
fn walk_points() -> Vec<Point> {
    let (mut x, mut gauge, mut n) = (12_345u64, 5_000i64, 0i64);
    (0..4000)
        .map(|i| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            gauge = (gauge + ((x >> 33) % 2001) as i64 - 1000).clamp(0, 10_000);
            n += ((x >> 20) % 7) as i64 - 3;
            Point {
                series: 700,
                shard: 0,
                ts: SEGMENT + i * 10_000_000_000,
                version: 0,
                tags: vec![TagVal::Str("host-7".into())].into(),
                fields: vec![FieldVal::Float(gauge as f64 / 100.0), FieldVal::Int(n)].into(),
            }
        })
        .collect()
}

fn catalog(part: PartMeta) -> CatalogState {
    let mut c = CatalogState::empty("g", 0);
    c.epoch = 3;
    c.watermarks = BTreeMap::from([("wal-a".to_string(), 7)]);
    c.next_part_id = 2;
    c.parts = vec![part];
    c.claims = vec![CompactionClaim { segment_start: SEGMENT, holder: "compactor-1".into(), expires_at_ms: 1_700_000_100_000 }];
    c.pending_deletes = vec![PendingDelete { path: "parts/g/0000/1699999200/old.arrow".into(), removed_at_ms: 1_700_000_000_000 }];
    c
}

#[tokio::test]
#[ignore = "writes the current version's fixtures"]
async fn write_current_fixtures() {
    if std::env::var_os("CANOPY_WRITE_FIXTURES").is_none() {
        return;
    }
    // From format 6 a second, small measure shares the batch of the first;
    // from format 7 a third one's series are named by their tag; from
    // format 9 a fourth one's fields are walk-coded.
    let part = encode_part(&[
        MeasureRows { name: "cpu".into(), layout: Arc::new(layout()), rows: points() },
        MeasureRows { name: "disk".into(), layout: Arc::new(layout()), rows: disk_points() },
        MeasureRows { name: "mem".into(), layout: Arc::new(layout()), rows: named_points() },
        MeasureRows { name: "load".into(), layout: Arc::new(layout()), rows: walk_points() },
    ])
    .unwrap();
    std::fs::write(fixture(&format!("part-v{}.arrow", canopy_storage::part::PART_FORMAT)), &part.bytes).unwrap();
    let meta = PartMeta::new(1, PART_PATH.into(), SEGMENT, SEGMENT + HOUR, 7, 0, part.summary);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cs = CatalogStore::new(store.clone());
    let v1 = cs.commit(&CatalogState::empty("g", 0), catalog(meta)).await.unwrap();
    let bytes = store.get(&paths::catalog_version("g", 0, v1.version)).await.unwrap().bytes().await.unwrap();
    std::fs::write(fixture(&format!("catalog-v{}.cat", u32::from_le_bytes(bytes[4..8].try_into().unwrap()))), &bytes).unwrap();
}

/// Loads a catalog fixture the way readers do: from the store.
async fn load_catalog(file: &str) -> (Arc<dyn ObjectStore>, CatalogState) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let bytes = std::fs::read(fixture(file)).unwrap();
    store.put(&paths::catalog_version("g", 0, 1), PutPayload::from(bytes)).await.unwrap();
    store.put(&PART_PATH.into(), PutPayload::from(std::fs::read(fixture("part-v1.arrow")).unwrap())).await.unwrap();
    let c = CatalogStore::new(store.clone()).load_version("g", 0, 1).await.unwrap_or_else(|e| panic!("{file}: {e}"));
    (store, c)
}

/// What every catalog fixture says, whatever its version.
fn assert_catalog(c: &CatalogState, file: &str) {
    assert_eq!((c.group.as_str(), c.shard, c.version, c.epoch, c.next_part_id), ("g", 0, 1, 3, 2), "{file}");
    assert_eq!(c.parts.len(), 1, "{file}");
    let p = &c.parts[0];
    assert_eq!(
        (p.id, p.path.as_str(), p.segment_start, p.segment_end, p.rows, p.max_wal_seq),
        (1, PART_PATH, SEGMENT, SEGMENT + HOUR, 12, 7)
    );
    assert_eq!(p.measures["cpu"].series, 3, "{file}");
    assert_eq!(c.claims[0].holder, "compactor-1", "{file}");
    assert_eq!(c.pending_deletes[0].removed_at_ms, 1_700_000_000_000, "{file}");
}

#[tokio::test]
async fn catalog_v1_with_per_wal_watermarks_decodes() {
    let (_, c) = load_catalog("catalog-v1.cat").await;
    assert_catalog(&c, "catalog-v1.cat");
    assert_eq!(c.watermark("wal-a"), 7);
}

#[tokio::test]
async fn catalog_v1_with_one_watermark_decodes_onto_the_legacy_wal() {
    let (_, c) = load_catalog("catalog-v1-single-watermark.cat").await;
    assert_catalog(&c, "catalog-v1-single-watermark.cat");
    assert_eq!(c.watermarks, BTreeMap::from([(canopy_storage::LEGACY_WAL_ID.to_string(), 7)]));
}

#[tokio::test]
async fn catalog_v2_decodes() {
    let (_, c) = load_catalog("catalog-v2.cat").await;
    assert_catalog(&c, "catalog-v2.cat");
    assert_eq!(c.watermark("wal-a"), 7);
    assert!(!c.commit_id.is_empty());
}

#[tokio::test]
async fn catalog_v3_decodes_its_compressed_body() {
    let (_, c) = load_catalog("catalog-v3.cat").await;
    assert_catalog(&c, "catalog-v3.cat");
    assert_eq!(c.watermark("wal-a"), 7);
    let bytes = std::fs::read(fixture("catalog-v3.cat")).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
    assert!(!bytes.windows(9).any(|w| w == b"parts\":["), "the body is compressed");
}

/// A part fixture in a store, with the catalog entry that describes it
/// (the v1 catalog's, sized to the file).
async fn part_fixture(file: &str) -> (Arc<dyn ObjectStore>, PartMeta, PartIndex) {
    let (_, c) = load_catalog("catalog-v1.cat").await;
    let bytes = std::fs::read(fixture(file)).unwrap();
    let trailer: [u8; 10] = bytes[bytes.len() - 10..].try_into().unwrap();
    let mut meta = c.parts[0].clone();
    meta.bytes = bytes.len() as u64;
    // From format 8 the footer sits before the Arrow footer: fetch it all
    // through format 7's size, and the whole file for later ones.
    let arrow_footer = arrow_ipc::reader::read_footer_length(trailer).unwrap() as u64 + 10;
    meta.footer_bytes = if file_format(file) <= 7 { arrow_footer } else { meta.bytes };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    store.put(&PART_PATH.into(), PutPayload::from(bytes)).await.unwrap();
    let index = read_index(store.as_ref(), &meta).await.unwrap();
    (store, meta, index)
}

/// The format in a part fixture's name (`part-v7.arrow`: 7).
fn file_format(file: &str) -> u32 {
    file.trim_start_matches("part-v").trim_end_matches(".arrow").parse().expect("part-vN.arrow")
}

/// Decodes a part fixture through the store, as queries read it.
async fn assert_part_fixture(file: &str) {
    let (store, meta, index) = part_fixture(file).await;
    let target = layout();
    let scan = Scan::everything("cpu", &target);
    let mut got = scan_part(store.as_ref(), &meta, &index, &scan).await.unwrap();
    got.sort_by_key(|p| (p.series, p.ts));
    let want = points();
    assert_eq!(got.len(), want.len(), "{file}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.series, g.ts, g.version, &g.tags, &g.fields), (w.series, w.ts, w.version, &w.tags, &w.fields), "{file}");
    }
}

#[tokio::test]
async fn the_part_v1_fixture_decodes_to_its_points() {
    assert_part_fixture("part-v1.arrow").await;
}

/// Decodes a format-2-or-later fixture and resolves one host through its series index.
async fn assert_indexed_fixture(file: &str, format: u32, host: &str, series: u64) {
    assert_part_fixture(file).await;
    let (_, _, index) = part_fixture(file).await;
    assert_eq!(index.format(), format);
    let value = [TagVal::Str(host.into())];
    assert_eq!(index.series_matching("cpu", &[("host", &value)]), Some(vec![series]), "{file}");
}

#[tokio::test]
async fn the_part_v2_fixture_decodes_to_its_points_and_indexes_its_series() {
    assert_indexed_fixture("part-v2.arrow", 2, "host-1", 101).await;
}

#[tokio::test]
async fn the_part_v3_fixture_decodes_its_packed_columns_to_its_points() {
    assert_indexed_fixture("part-v3.arrow", 3, "host-2", 102).await;
}

#[tokio::test]
async fn the_part_v4_fixture_decodes_its_compressed_footer() {
    assert_indexed_fixture("part-v4.arrow", 4, "host-2", 102).await;
}

#[tokio::test]
async fn the_part_v5_fixture_decodes() {
    assert_indexed_fixture("part-v5.arrow", 5, "host-2", 102).await;
}

#[tokio::test]
async fn the_part_v6_fixture_decodes_two_measures_sharing_a_batch() {
    assert_indexed_fixture("part-v6.arrow", 6, "host-2", 102).await;
    let (store, meta, index) = part_fixture("part-v6.arrow").await;
    assert_eq!((index.batches_of("cpu"), index.batches_of("disk")), (vec![0], vec![0]));
    let target = layout();
    let got = scan_part(store.as_ref(), &meta, &index, &Scan::everything("disk", &target)).await.unwrap();
    assert_eq!(got, disk_points());
    assert_eq!(index.series_matching("disk", &[("host", &[TagVal::Str("host-1".into())])]), Some(vec![900]));
}

#[tokio::test]
async fn the_part_v7_fixture_resolves_series_named_by_their_tag() {
    assert_indexed_fixture("part-v7.arrow", 7, "host-2", 102).await;
    let (store, meta, index) = part_fixture("part-v7.arrow").await;
    assert_eq!(index.batches_of("mem"), vec![0], "three measures share one batch");
    let target = layout();
    let got = scan_part(store.as_ref(), &meta, &index, &Scan::everything("mem", &target)).await.unwrap();
    assert_eq!(got, named_points());
    let host = TagVal::Str("host-1".into());
    let want = canopy_model::series_id("mem", [&host]);
    assert_eq!(index.series_matching("mem", &[("host", &[host, TagVal::Str("host-9".into())])]), Some(vec![want]));
}

#[tokio::test]
async fn the_part_v8_fixture_keeps_its_footer_outside_the_arrow_metadata() {
    assert_indexed_fixture("part-v8.arrow", 8, "host-2", 102).await;
    let (store, meta, index) = part_fixture("part-v8.arrow").await;
    let target = layout();
    assert_eq!(scan_part(store.as_ref(), &meta, &index, &Scan::everything("mem", &target)).await.unwrap(), named_points());
    let bytes = std::fs::read(fixture("part-v8.arrow")).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert!(reader.custom_metadata().contains_key("canopy.part.zb") && !reader.custom_metadata().contains_key("canopy.part.z7"));
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3 + 1 + 3, "a plain Arrow file reader sees every block, and no more");
}

#[tokio::test]
async fn the_part_v9_fixture_decodes_walk_coded_fields() {
    assert_indexed_fixture("part-v9.arrow", 9, "host-2", 102).await;
    let (store, meta, index) = part_fixture("part-v9.arrow").await;
    let target = layout();
    assert_eq!(scan_part(store.as_ref(), &meta, &index, &Scan::everything("mem", &target)).await.unwrap(), named_points());
    assert_eq!(scan_part(store.as_ref(), &meta, &index, &Scan::everything("load", &target)).await.unwrap(), walk_points());
    // The gauge's column is walk-coded: its kind byte is the decimal kind
    // (5) with the walk flag (0x20).
    let bytes = std::fs::read(fixture("part-v9.arrow")).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let f0 = batch.column_by_name("f0").unwrap().as_any().downcast_ref::<arrow_array::BinaryArray>().unwrap();
    assert_eq!(f0.iter().filter(|v| v.and_then(|v| v.first()) == Some(&0x25)).count(), 1, "one walk-coded gauge block");
}
