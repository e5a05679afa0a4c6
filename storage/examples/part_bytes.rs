//! Where a store's bytes go: the parts the newest catalog version of each
//! shard under `<root>/catalog` lists, by Arrow column (summed over
//! batches), their footers, and those catalog versions. For deciding which
//! codec or layout change is worth making.
//!
//! `cargo run --release -p canopy-storage --example part_bytes -- <data dir>/objects [--fields]`
//!
//! With `--fields`, also the encoded (before zstd) bytes of the first field
//! column by encoding and the measures holding the most of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use canopy_storage::part::PartIndex;

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::args().nth(1).ok_or("usage: part_bytes <object store root>")?);
    let mut parts = Vec::new();
    let mut catalogs = 0u64;
    for shard in std::fs::read_dir(root.join("catalog"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|g| std::fs::read_dir(g.path()))
        .flatten()
        .flatten()
    {
        let mut versions = Vec::new();
        files(&shard.path(), "cat", &mut versions);
        let Some(newest) = versions.iter().max() else { continue };
        let bytes = std::fs::read(newest)?;
        catalogs += bytes.len() as u64;
        let state: serde_json::Value = serde_json::from_slice(&canopy_storage::catalog_format::body_json(&bytes)?)?;
        parts.extend(state["parts"].as_array().into_iter().flatten().filter_map(|p| p["path"].as_str()).map(|p| root.join(p)));
    }
    let (mut total, mut messages, mut batches, mut measures) = (0u64, 0u64, 0usize, 0usize);
    let mut by_column: BTreeMap<String, u64> = BTreeMap::new();
    for p in &parts {
        let bytes = std::fs::read(p)?;
        let index = PartIndex::parse(&p.display().to_string(), &bytes)?;
        total += bytes.len() as u64;
        batches += index.batch_count();
        measures += index.measures().count();
        for (column, n) in index.bytes_by_column() {
            messages += n;
            *by_column.entry(column).or_default() += n;
        }
    }
    println!("{} parts, {batches} batches, {measures} measures (summed over parts): {total} bytes", parts.len());
    let mut rows: Vec<(String, u64)> = by_column.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (column, n) in rows {
        println!("  {column:<20} {n:>10}");
    }
    println!("  {:<20} {:>10}", "(footers, padding)", total - messages);
    println!("newest catalogs: {catalogs} bytes");
    if std::env::args().any(|a| a == "--fields") {
        field_bytes(&parts)?;
    }
    Ok(())
}

/// The first field column's encoded bytes per encoding (its kind byte) and
/// per measure, before zstd.
fn field_bytes(parts: &[PathBuf]) -> Result<(), Box<dyn std::error::Error>> {
    // (encoded bytes, samples) per kind byte and per measure.
    let mut by_kind: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
    let mut by_measure: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    // Encoded values per measure and per kind, to estimate what zstd makes of them.
    let (mut kind_bytes, mut measure_bytes): (BTreeMap<u8, Vec<u8>>, BTreeMap<String, Vec<u8>>) = Default::default();
    for p in parts {
        let index = PartIndex::parse(&p.display().to_string(), &std::fs::read(p)?)?;
        for (i, batch) in arrow_ipc::reader::FileReader::try_new(std::fs::File::open(p)?, None)?.enumerate() {
            let batch = batch?;
            // Format 6 marks where each measure starts; the footer names them.
            let mut names = index.batch_measures(i).into_iter();
            let (Some(measure), Some(count), Some(f0)) =
                (batch.column_by_name("measure"), batch.column_by_name("count"), batch.column_by_name("f0"))
            else {
                continue;
            };
            let (measure, count, f0) =
                (measure.as_string::<i32>(), count.as_primitive::<arrow_array::types::UInt32Type>(), f0.as_binary::<i32>());
            let mut current = String::new();
            for row in 0..batch.num_rows() {
                match measure.value(row) {
                    "" => {}
                    _ if index.format() >= 6 => current = names.next().unwrap_or_default().to_string(),
                    name => current = name.to_string(),
                }
                let (v, n) = (f0.value(row), count.value(row) as u64);
                let k = by_kind.entry(v.first().copied().unwrap_or(0)).or_default();
                *k = (k.0 + v.len() as u64, k.1 + n);
                let m = by_measure.entry(current.clone()).or_default();
                *m = (m.0 + v.len() as u64, m.1 + n);
                kind_bytes.entry(v.first().copied().unwrap_or(0)).or_default().extend_from_slice(v);
                measure_bytes.entry(current.clone()).or_default().extend_from_slice(v);
            }
        }
    }
    let zstd_len = |b: &[u8]| zstd::bulk::compress(b, 3).map_or(0, |z| z.len() as u64);
    println!("first field by kind (kind byte: encoded bytes, zstd bytes, samples):");
    for (k, (b, n)) in by_kind {
        let z = zstd_len(&kind_bytes[&k]);
        println!("  {k:#04x} {b:>10} {z:>10} {n:>10}  {:.3} zstd bytes/sample", z as f64 / n.max(1) as f64);
    }
    let mut ms: Vec<(String, (u64, u64, u64))> =
        by_measure.into_iter().map(|(m, (b, n))| (m.clone(), (b, zstd_len(&measure_bytes[&m]), n))).collect();
    ms.sort_by_key(|m| std::cmp::Reverse(m.1.1));
    println!("measures holding the most (encoded, zstd alone, samples):");
    for (m, (b, z, n)) in ms.iter().take(30) {
        println!("  {m:<50} {b:>8} {z:>8} {n:>8}  {:.3} zstd bytes/sample", *z as f64 / (*n).max(1) as f64);
    }
    Ok(())
}
