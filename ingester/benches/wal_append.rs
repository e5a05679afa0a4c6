//! WAL append with fsync: how many bytes and records one group commit moves.

use canopy_ingester::wal::Wal;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 0, 64 << 20).unwrap();
    let mut g = c.benchmark_group("wal");
    for (records, size) in [(1usize, 64 * 1024usize), (64, 16 * 1024)] {
        let payloads: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; size]).collect();
        g.throughput(Throughput::Bytes((records * size) as u64));
        g.bench_function(format!("append+fsync {records} x {size} B"), |b| b.iter(|| wal.append(&payloads).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
