//! A line-protocol ingest load, as the benchmark sends it: TSBS devops cpu
//! rows (ten tags, ten fields) posted to `/write` in batches by concurrent
//! senders. Bodies are prepared up front, so the clock measures Canopy.
//! For profiling ingest (`perf record -p <canopy pid>` while it runs).
//!
//! ```text
//! cargo run --release --example line_protocol_load -- --url http://127.0.0.1:17913
//! ```

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use canopy_bench::tsbs::{FIELDS, INTERVAL_SECS, hosts, line_protocol, rows};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Canopy's HTTP address (line protocol is served at `/write`).
    #[arg(long, default_value = "http://127.0.0.1:17913")]
    url: String,
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    #[arg(long, default_value_t = 24)]
    hours: usize,
    /// Rows per request (ten samples each).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    senders: usize,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let steps = a.hours * 3600 / INTERVAL_SECS as usize;
    let start = (now - steps as i64 * INTERVAL_SECS) / 60 * 60;
    let hosts = hosts(a.hosts, 1);
    let rows = rows(a.hosts, start, steps, 1);
    let mut bodies: Vec<Vec<Vec<u8>>> = vec![Vec::new(); a.senders];
    for (i, chunk) in rows.chunks(a.batch).enumerate() {
        bodies[i % a.senders].push(line_protocol(&hosts, chunk));
    }
    let total = rows.len() * FIELDS.len();
    eprintln!("prepared {total} samples in {} requests", rows.len().div_ceil(a.batch));
    let url = format!("{}/write?db=benchmark&precision=s", a.url);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for b in bodies {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for body in b {
                let r = client.post(&url).body(body).send().await.unwrap();
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
