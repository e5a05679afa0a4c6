//! Loaders that push the same rows to a peer over InfluxDB line protocol or
//! Prometheus remote write, in batches, from several concurrent workers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use canopy_api::prometheus as pb;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;

use crate::tsbs::{FIELDS, Host, Row, TAGS};

/// How rows travel to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Influx,
    RemoteWrite,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Influx => "influx line protocol",
            Protocol::RemoteWrite => "prometheus remote write",
        }
    }
}

fn line_protocol(hosts: &[Host], rows: &[Row]) -> Vec<u8> {
    let mut s = String::with_capacity(rows.len() * 300);
    for r in rows {
        s.push_str("cpu");
        for (k, v) in TAGS.iter().zip(&hosts[r.host].tags) {
            let _ = write!(s, ",{k}={v}");
        }
        for (i, (f, v)) in FIELDS.iter().zip(r.values).enumerate() {
            let _ = write!(s, "{}{f}={v}", if i == 0 { ' ' } else { ',' });
        }
        let _ = writeln!(s, " {}", r.ts_secs);
    }
    s.into_bytes()
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

/// Sends every row; returns the seconds it took until the last batch was acknowledged.
pub(crate) async fn load(
    base: &str,
    protocol: Protocol,
    hosts: Arc<Vec<Host>>,
    rows: Arc<Vec<Row>>,
    batch: usize,
    workers: usize,
) -> anyhow::Result<f64> {
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
    };
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (hosts, rows, next, bar, url) = (hosts.clone(), rows.clone(), next.clone(), bar.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let chunk = &rows[b * batch..((b + 1) * batch).min(rows.len())];
                let req = match protocol {
                    Protocol::Influx => client.post(&url).body(line_protocol(&hosts, chunk)),
                    Protocol::RemoteWrite => client
                        .post(&url)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(remote_write(&hosts, chunk)),
                };
                let r = req.send().await?;
                if !r.status().is_success() {
                    anyhow::bail!("{url}: {} {}", r.status(), r.text().await.unwrap_or_default());
                }
                bar.inc(chunk.len() as u64);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish();
    Ok(t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsbs::{hosts, rows};

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
