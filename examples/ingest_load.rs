//! A simple ingest load for a first throughput and size figure: TSBS-shaped
//! `cpu` rows (10 tags, 10 float fields, one row per host every 10 s) sent
//! over gRPC write streams to a running Canopy, then flushed.
//!
//! ```text
//! cargo run --release --example ingest_load -- --hosts 100 --hours 24
//! ```

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use canopy_api::Timestamp;
use canopy_api::v1::measure_service_client::MeasureServiceClient;
use canopy_api::v1::*;
use canopy_bench::tsbs::{FIELDS, TAGS};
use clap::Parser;
use tokio_stream::StreamExt;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:17912")]
    grpc: String,
    #[arg(long, default_value = "127.0.0.1:17913")]
    http: String,
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    #[arg(long, default_value_t = 24)]
    hours: usize,
    /// Rows per write request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent write streams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// End the generated window this many hours before now (to load
    /// consecutive windows in separate runs, as flushes over a day would).
    #[arg(long, default_value_t = 0)]
    end_hours_ago: usize,
    /// Seed of the value random walks (runs with different seeds write different values).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn s(v: String) -> TagValue {
    TagValue { value: Some(tag_value::Value::Str(Str { value: v })) }
}

async fn create_schema(http: &str, shards: u32) {
    let c = reqwest::Client::new();
    let group = serde_json::json!({"group": {"metadata": {"name": "bench"}, "catalog": "CATALOG_MEASURE",
        "resourceOpts": {"shardNum": shards, "segmentInterval": {"unit": "UNIT_DAY", "num": 1}, "ttl": {"unit": "UNIT_DAY", "num": 30}}}});
    let _ = c.post(format!("http://{http}/api/v1/group/schema")).json(&group).send().await.unwrap();
    let tags: Vec<_> = TAGS.iter().map(|t| serde_json::json!({"name": t, "type": "TAG_TYPE_STRING"})).collect();
    let fields: Vec<_> = FIELDS.iter().map(|f| serde_json::json!({"name": f, "fieldType": "FIELD_TYPE_FLOAT"})).collect();
    let measure = serde_json::json!({"measure": {"metadata": {"group": "bench", "name": "cpu"},
        "tagFamilies": [{"name": "default", "tags": tags}], "fields": fields, "entity": {"tagNames": ["hostname"]}, "interval": "10s"}});
    let _ = c.post(format!("http://{http}/api/v1/measure/schema")).json(&measure).send().await.unwrap();
}

/// Clamped random walks, as TSBS generates them (values rounded to 2 decimals
/// like TSBS' text output).
fn rows(hosts: usize, steps: usize, start_secs: i64, stream: usize, streams: usize, seed: u64) -> Vec<DataPointValue> {
    let mut x: u64 = (0x9E3779B97F4A7C15 ^ stream as u64).wrapping_mul(seed | 1).max(1);
    let mut vals = vec![[50.0f64; 10]; hosts];
    let mut out = Vec::new();
    for step in 0..steps {
        for (h, v) in vals.iter_mut().enumerate() {
            if h % streams != stream {
                continue;
            }
            let tags = vec![
                s(format!("host_{h}")),
                s(format!("region_{}", h % 3)),
                s(format!("dc_{}", h % 6)),
                s(format!("rack_{}", h % 50)),
                s("Ubuntu16.04LTS".into()),
                s("x64".into()),
                s(format!("team_{}", h % 4)),
                s(format!("svc_{}", h % 20)),
                s(format!("{}", h % 2)),
                s("production".into()),
            ];
            let fields = v
                .iter_mut()
                .map(|f| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *f = (*f + ((x % 2001) as f64 / 1000.0 - 1.0)).clamp(0.0, 100.0);
                    FieldValue { value: Some(field_value::Value::Float(Float { value: (*f * 100.0).round() / 100.0 })) }
                })
                .collect();
            out.push(DataPointValue {
                timestamp: Some(Timestamp { seconds: start_secs + step as i64 * 10, nanos: 0 }),
                tag_families: vec![TagFamilyForWrite { tags }],
                fields,
                version: 0,
            });
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    create_schema(&a.http, a.shards).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let steps = a.hours * 360;
    let start = now - (steps + a.end_hours_ago * 360) as i64 * 10;
    let data: Vec<Vec<DataPointValue>> = (0..a.streams).map(|i| rows(a.hosts, steps, start, i, a.streams, a.seed)).collect();
    let total_rows: usize = data.iter().map(Vec::len).sum();
    eprintln!("generated {total_rows} rows ({} samples)", total_rows * 10);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for d in data {
        let addr = a.grpc.clone();
        let batch = a.batch;
        tasks.push(tokio::spawn(async move {
            let mut client = MeasureServiceClient::connect(format!("http://{addr}")).await.unwrap();
            let reqs: Vec<WriteRequest> = d
                .chunks(batch)
                .enumerate()
                .map(|(i, c)| WriteRequest {
                    metadata: Some(Metadata { group: "bench".into(), name: "cpu".into(), mod_revision: 0 }),
                    data_points: c.to_vec(),
                    message_id: i as u64,
                })
                .collect();
            let mut resp = client.write(tokio_stream::iter(reqs)).await.unwrap().into_inner();
            let mut acked = 0u64;
            while let Some(r) = resp.next().await {
                let r = r.unwrap();
                assert_eq!(r.status(), Status::Succeed, "{r:?}");
                acked += r.accepted as u64;
            }
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let r = reqwest::Client::new().post(format!("http://{}/api/v1/admin/flush", a.http)).send().await.unwrap();
    let flush_secs = t1.elapsed().as_secs_f64();
    println!(
        "rows={acked} samples={} ingest_secs={secs:.2} rows_per_sec={:.0} samples_per_sec={:.0} flush_secs={flush_secs:.2} flush={}",
        acked * 10,
        acked as f64 / secs,
        acked as f64 * 10.0 / secs,
        r.text().await.unwrap()
    );
}
