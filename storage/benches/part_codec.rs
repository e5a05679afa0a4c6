//! Part encoding and decoding throughput on TSBS-shaped rows: 100 series
//! (10 string tags, 10 two-decimal float fields) × 1,000 points each.

use std::sync::Arc;

use canopy_model::{ColumnLayout, FieldVal, Point, TagVal};
use canopy_storage::PartMeta;
use canopy_storage::part::{MeasureRows, Scan, encode_part, read_index, scan_part};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::{ObjectStore, ObjectStoreExt};

const SERIES: u64 = 100;
const POINTS: i64 = 1_000;

fn rows() -> (Arc<ColumnLayout>, Vec<Point>) {
    let layout = Arc::new(ColumnLayout {
        tags: (0..10).map(|i| ("d".to_string(), format!("t{i}"), 1)).collect(),
        fields: (0..10).map(|i| (format!("f{i}"), 4)).collect(),
    });
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rows = Vec::new();
    for s in 0..SERIES {
        let mut v = [50.0f64; 10];
        for t in 0..POINTS {
            for f in v.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *f = ((*f + (x % 2001) as f64 / 100.0 - 10.0).clamp(0.0, 100.0) * 100.0).round() / 100.0;
            }
            rows.push(Point {
                series: s,
                shard: 0,
                ts: 1_700_000_000_000_000_000 + t * 10_000_000_000,
                version: 0,
                tags: (0..10).map(|i| TagVal::Str(format!("value-{i}-{}", s % (i + 2)))).collect(),
                fields: v.iter().map(|f| FieldVal::Float(*f)).collect(),
            });
        }
    }
    (layout, rows)
}

fn bench(c: &mut Criterion) {
    let (layout, rows) = rows();
    let input = [MeasureRows { name: "cpu".into(), layout: layout.clone(), rows }];
    let mut g = c.benchmark_group("part");
    g.throughput(Throughput::Elements((SERIES * POINTS as u64) * 10));
    g.bench_function("encode (samples)", |b| b.iter(|| encode_part(&input).unwrap()));
    let enc = encode_part(&input).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    rt.block_on(store.put(&"p".into(), enc.bytes.clone().into())).unwrap();
    let meta = PartMeta::new(1, "p".into(), 0, i64::MAX, 0, 0, enc.summary);
    let index = rt.block_on(read_index(store.as_ref(), &meta)).unwrap();
    let scan = Scan::everything("cpu", &layout);
    g.bench_function("decode (samples)", |b| b.iter(|| rt.block_on(scan_part(store.as_ref(), &meta, &index, &scan)).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
