//! A simple Prometheus remote-write load: TSBS-shaped cpu metrics (one
//! series per host and field, 10 labels each, one sample every 10 s) sent as
//! snappy protobuf batches, as Prometheus' remote-write queue sends them.
//!
//! ```text
//! cargo run --release --example remote_write_load -- --url http://127.0.0.1:17913/api/v1/write
//! ```

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use canopy_api::prometheus as pb;
use canopy_bench::tsbs::FIELDS;
use clap::Parser;
use prost::Message;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:17913/api/v1/write")]
    url: String,
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    #[arg(long, default_value_t = 6)]
    hours: usize,
    /// Samples per request (Prometheus sends up to 2,000 by default).
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Concurrent senders (Prometheus shards).
    #[arg(long, default_value_t = 4)]
    senders: usize,
}

fn label(n: &str, v: String) -> pb::Label {
    pb::Label { name: n.into(), value: v }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let steps = a.hours * 360;
    let start = now_ms - steps as i64 * 10_000;
    // Bodies prepared up front so the clock measures Canopy, not the encoder.
    let mut bodies: Vec<Vec<Vec<u8>>> = vec![Vec::new(); a.senders];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut vals = vec![[50.0f64; 10]; a.hosts];
    let mut batch: Vec<pb::TimeSeries> = Vec::new();
    let mut in_batch = 0;
    let mut total = 0usize;
    let mut sender = 0;
    for step in 0..steps {
        for (h, v) in vals.iter_mut().enumerate() {
            for (f, name) in FIELDS.iter().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v[f] = (v[f] + ((x % 2001) as f64 / 1000.0 - 1.0)).clamp(0.0, 100.0);
                batch.push(pb::TimeSeries {
                    labels: vec![
                        label("__name__", format!("cpu_{name}")),
                        label("hostname", format!("host_{h}")),
                        label("region", format!("region_{}", h % 3)),
                        label("datacenter", format!("dc_{}", h % 6)),
                        label("rack", format!("rack_{}", h % 50)),
                        label("os", "Ubuntu16.04LTS".into()),
                        label("arch", "x64".into()),
                        label("team", format!("team_{}", h % 4)),
                        label("service", format!("svc_{}", h % 20)),
                        label("service_environment", "production".into()),
                    ],
                    samples: vec![pb::Sample { value: (v[f] * 100.0).round() / 100.0, timestamp: start + step as i64 * 10_000 }],
                });
                in_batch += 1;
                total += 1;
                if in_batch == a.batch {
                    let body = pb::WriteRequest { timeseries: std::mem::take(&mut batch), metadata: vec![] }.encode_to_vec();
                    bodies[sender].push(snap::raw::Encoder::new().compress_vec(&body).unwrap());
                    sender = (sender + 1) % a.senders;
                    in_batch = 0;
                }
            }
        }
    }
    if !batch.is_empty() {
        let body = pb::WriteRequest { timeseries: batch, metadata: vec![] }.encode_to_vec();
        bodies[sender].push(snap::raw::Encoder::new().compress_vec(&body).unwrap());
    }
    let bytes: usize = bodies.iter().flatten().map(Vec::len).sum();
    eprintln!("prepared {total} samples in {} requests ({bytes} bytes)", bodies.iter().map(Vec::len).sum::<usize>());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for b in bodies {
        let url = a.url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for body in b {
                let r = client
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("samples={total} secs={secs:.2} samples_per_sec={:.0}", total as f64 / secs);
}
