//! Loaders that push the same rows to a peer over InfluxDB line protocol or
//! Prometheus remote write, in batches, from several concurrent workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use canopy_api::prometheus as pb;
use canopy_api::v1;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;

use canopy_bench::tsbs::{FIELDS, Host, Row, TAGS, line_protocol};

/// How rows travel to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Influx,
    RemoteWrite,
    /// Canopy's own gRPC write stream (Canopy only).
    Native,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Influx => "influx line protocol",
            Protocol::RemoteWrite => "prometheus remote write",
            Protocol::Native => "canopy native grpc",
        }
    }
}

fn remote_write(hosts: &[Host], rows: &[Row]) -> Vec<u8> {
    let mut timeseries = Vec::with_capacity(rows.len() * FIELDS.len());
    for r in rows {
        for (f, v) in FIELDS.iter().zip(r.values) {
            let mut labels = vec![pb::Label { name: "__name__".into(), value: format!("cpu_{f}") }];
            labels.extend(TAGS.iter().zip(&hosts[r.host].tags).map(|(k, v)| pb::Label { name: k.to_string(), value: v.clone() }));
            timeseries.push(pb::TimeSeries { labels, samples: vec![pb::Sample { value: v, timestamp: r.ts_secs * 1000 }] });
        }
    }
    let body = pb::WriteRequest { timeseries, metadata: vec![] }.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&body).expect("snappy")
}

/// Creates the native schema: group `benchmark_native`, measure `cpu` whose
/// entity is the hostname, ten string tags and ten float fields.
async fn native_schema(http: &str) -> anyhow::Result<()> {
    let c = reqwest::Client::new();
    let group = serde_json::json!({"group": {"metadata": {"name": "benchmark_native"}, "catalog": "CATALOG_MEASURE",
        "resourceOpts": {"shardNum": 2, "segmentInterval": {"unit": "UNIT_DAY", "num": 1}, "ttl": {"unit": "UNIT_DAY", "num": 30}}}});
    c.post(format!("{http}/api/v1/group/schema")).json(&group).send().await?.error_for_status()?;
    let tags: Vec<_> = TAGS.iter().map(|t| serde_json::json!({"name": t, "type": "TAG_TYPE_STRING"})).collect();
    let fields: Vec<_> = FIELDS.iter().map(|f| serde_json::json!({"name": f, "fieldType": "FIELD_TYPE_FLOAT"})).collect();
    let measure = serde_json::json!({"measure": {"metadata": {"group": "benchmark_native", "name": "cpu"},
        "tagFamilies": [{"name": "default", "tags": tags}], "fields": fields, "entity": {"tagNames": ["hostname"]}, "interval": "10s"}});
    c.post(format!("{http}/api/v1/measure/schema")).json(&measure).send().await?.error_for_status()?;
    Ok(())
}

fn native_request(hosts: &[Host], rows: &[Row], id: u64) -> v1::WriteRequest {
    let str_tag = |s: &str| v1::TagValue { value: Some(v1::tag_value::Value::Str(v1::Str { value: s.to_string() })) };
    v1::WriteRequest {
        metadata: Some(v1::Metadata { group: "benchmark_native".into(), name: "cpu".into(), mod_revision: 0 }),
        data_points: rows
            .iter()
            .map(|r| v1::DataPointValue {
                timestamp: Some(canopy_api::Timestamp { seconds: r.ts_secs, nanos: 0 }),
                tag_families: vec![v1::TagFamilyForWrite { tags: hosts[r.host].tags.iter().map(|t| str_tag(t)).collect() }],
                fields: r
                    .values
                    .iter()
                    .map(|v| v1::FieldValue { value: Some(v1::field_value::Value::Float(v1::Float { value: *v })) })
                    .collect(),
                version: 0,
            })
            .collect(),
        message_id: id,
    }
}

/// Sends every row over Canopy's gRPC write streams (one per worker).
async fn load_native(
    http: &str,
    grpc: &str,
    hosts: Arc<Vec<Host>>,
    rows: Arc<Vec<Row>>,
    batch: usize,
    workers: usize,
    bar: ProgressBar,
) -> anyhow::Result<f64> {
    native_schema(http).await?;
    let batches = rows.len().div_ceil(batch);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (hosts, rows, bar, grpc) = (hosts.clone(), rows.clone(), bar.clone(), grpc.to_string());
        tasks.push(tokio::spawn(async move {
            let mut client = v1::measure_service_client::MeasureServiceClient::connect(format!("http://{grpc}")).await?;
            let mine: Vec<v1::WriteRequest> = (w..batches)
                .step_by(workers)
                .map(|b| native_request(&hosts, &rows[b * batch..((b + 1) * batch).min(rows.len())], b as u64))
                .collect();
            let mut resp = client.write(tokio_stream::iter(mine)).await?.into_inner();
            while let Some(r) = tokio_stream::StreamExt::next(&mut resp).await {
                let r = r?;
                anyhow::ensure!(r.status == v1::Status::Succeed as i32, "native write: {}", r.message);
                bar.inc(r.accepted as u64);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish();
    Ok(t0.elapsed().as_secs_f64())
}

/// Loads `rows` over line protocol in `flushes` slices, flushing after
/// each: that many parts per shard and segment, as a day looks before
/// compaction catches up.
pub(crate) async fn load_in_flushed_slices(
    base: &str,
    hosts: Arc<Vec<Host>>,
    rows: &[Row],
    flushes: usize,
    batch: usize,
    workers: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for slice in rows.chunks(rows.len().div_ceil(flushes.max(1))) {
        load(base, None, Protocol::Influx, hosts.clone(), Arc::new(slice.to_vec()), batch, workers).await?;
        client.post(format!("{base}/api/v1/admin/flush")).send().await?.error_for_status()?;
    }
    Ok(())
}

/// What a load measured: the seconds until the last batch was acknowledged,
/// and each request's acknowledgement time (send to response; none for the
/// native stream, whose requests are pipelined).
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    pub(crate) secs: f64,
    pub(crate) acks: Vec<f64>,
}

impl Loaded {
    /// The `q` quantile (0..=1) of the acknowledgement times, in ms.
    pub(crate) fn ack_ms(&self, q: f64) -> Option<f64> {
        if self.acks.is_empty() {
            return None;
        }
        let mut a = self.acks.clone();
        a.sort_by(f64::total_cmp);
        let i = ((a.len() - 1) as f64 * q).round() as usize;
        Some(a[i] * 1e3)
    }
}

/// Sends every row.
pub(crate) async fn load(
    base: &str,
    grpc: Option<&str>,
    protocol: Protocol,
    hosts: Arc<Vec<Host>>,
    rows: Arc<Vec<Row>>,
    batch: usize,
    workers: usize,
) -> anyhow::Result<Loaded> {
    let batches = rows.len().div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let bar = ProgressBar::new(rows.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("  {msg:40} [{bar:30}] {pos}/{len} rows {per_sec}").expect("template").progress_chars("=> "),
    );
    bar.set_message(protocol.name());
    let url = match protocol {
        Protocol::Influx => format!("{base}/write?db=benchmark&precision=s"),
        Protocol::RemoteWrite => format!("{base}/api/v1/write"),
        Protocol::Native => {
            let grpc = grpc.ok_or_else(|| anyhow::anyhow!("the native loader needs Canopy's gRPC address"))?;
            let secs = load_native(base, grpc, hosts, rows, batch, workers, bar).await?;
            return Ok(Loaded { secs, acks: Vec::new() });
        }
    };
    // Bodies are encoded before the clock starts: the loader shares this
    // machine's two cores with the peer, and encoding remote write
    // (protobuf + snappy) while sending took as much CPU as the peer spent
    // decoding it — both peers measured the loader.
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        rows.chunks(batch)
            .map(|chunk| match protocol {
                Protocol::Influx => line_protocol(&hosts, chunk).into(),
                Protocol::RemoteWrite => remote_write(&hosts, chunk).into(),
                Protocol::Native => unreachable!("handled above"),
            })
            .collect(),
    );
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (bodies, rows, next, bar, url) = (bodies.clone(), rows.clone(), next.clone(), bar.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acks = Vec::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(acks);
                }
                let chunk = &rows[b * batch..((b + 1) * batch).min(rows.len())];
                let req = match protocol {
                    Protocol::Influx => client.post(&url).body(bodies[b].clone()),
                    Protocol::Native => unreachable!("handled above"),
                    Protocol::RemoteWrite => client
                        .post(&url)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(bodies[b].clone()),
                };
                let sent = Instant::now();
                let r = req.send().await?;
                if !r.status().is_success() {
                    anyhow::bail!("{url}: {} {}", r.status(), r.text().await.unwrap_or_default());
                }
                acks.push(sent.elapsed().as_secs_f64());
                bar.inc(chunk.len() as u64);
            }
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await??);
    }
    bar.finish();
    Ok(Loaded { secs: t0.elapsed().as_secs_f64(), acks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_bench::tsbs::{hosts, rows};

    #[test]
    fn line_protocol_carries_every_tag_and_field() {
        let h = hosts(2, 1);
        let r = rows(2, 100, 1, 1);
        let text = String::from_utf8(line_protocol(&h, &r)).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("cpu,hostname=host_0,region="));
        assert_eq!(first.matches('=').count(), 20);
        assert!(first.ends_with(" 100"));
    }
}
