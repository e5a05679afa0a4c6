//! Merging four overlapping parts of 100 series into one.

use std::sync::Arc;

use canopy_compactor::merge_parts;
use canopy_model::{ColumnLayout, FieldVal, Point, TagVal};
use canopy_storage::PartMeta;
use canopy_storage::part::{MeasureRows, encode_part};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::{ObjectStore, ObjectStoreExt};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let layout = Arc::new(ColumnLayout { tags: vec![("d".into(), "h".into(), 1)], fields: vec![("v".into(), 4)] });
    let mut inputs = Vec::new();
    for k in 0..4i64 {
        let rows: Vec<Point> = (0..100u64)
            .flat_map(|s| {
                (0..2_500i64).map(move |t| Point {
                    series: s,
                    shard: 0,
                    ts: t * 40 + k * 10,
                    version: 0,
                    tags: vec![TagVal::Str(format!("host-{s}"))].into(),
                    fields: vec![FieldVal::Float(((t + k) % 1000) as f64 / 10.0)].into(),
                })
            })
            .collect();
        let enc = encode_part(&[MeasureRows { name: "m".into(), layout: layout.clone(), rows }]).unwrap();
        let path = format!("in{k}");
        rt.block_on(store.put(&path.as_str().into(), enc.bytes.clone().into())).unwrap();
        inputs.push(PartMeta::new(k as u64, path, 0, i64::MAX, 0, 0, enc.summary));
    }
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(4 * 100 * 2_500));
    g.sample_size(10);
    // Outputs are created, never overwritten: a fresh key per run.
    let mut n = 0;
    g.bench_function("4 parts (points)", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(merge_parts(&store, &inputs, &format!("out{n}"), 8 << 20)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
