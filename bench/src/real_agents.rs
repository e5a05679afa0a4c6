//! Storage on data no generator shaped: a real Prometheus (Debian's) scrapes
//! itself and node-exporter every second and remote-writes to Canopy and to
//! VictoriaMetrics at once (two `remote_write` targets of one config) for a
//! fixed time. Then its scrapes stop (a config reload without scrape jobs),
//! both queues drain, and Prometheus' own counters say how many samples each
//! peer was sent; both peers settle and their bytes per sample are compared.
//! A few series are read back from both (Canopy's remote read, VictoriaMetrics'
//! export) and must hold the same samples.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use canopy_api::prometheus as pb;
use prost::Message;

use crate::peers::{Peer, Proc, free_port};

/// Series compared sample by sample between the peers.
const COMPARED: [(&str, &[(&str, &str)]); 3] =
    [("up", &[("job", "node")]), ("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "idle")]), ("prometheus_tsdb_head_series", &[])];

fn config(prom_port: u16, node_port: u16, canopy: &str, vm: &str, scrape: bool) -> String {
    let scrapes = if scrape {
        format!(
            "scrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n  \
             - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\n"
        )
    } else {
        "scrape_configs: []\n".to_string()
    };
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{scrapes}remote_write:\n  - url: {canopy}/api/v1/write\n    name: canopy\n  \
         - url: {vm}/api/v1/write\n    name: victoria-metrics\n"
    )
}

/// Prometheus' own `/metrics` text.
async fn prometheus_metrics(prom_port: u16) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://127.0.0.1:{prom_port}/metrics")).await?.text().await?)
}

/// The sum of `metric` for the remote named `remote` in a `/metrics` text.
fn remote_metric(text: &str, metric: &str, remote: &str) -> f64 {
    let needle = format!("remote_name=\"{remote}\"");
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{') && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Samples of one series from Canopy, over Prometheus remote read.
async fn canopy_samples(base: &str, name: &str, labels: &[(&str, &str)], range: (i64, i64)) -> anyhow::Result<Vec<(i64, u64)>> {
    let eq = |n: &str, v: &str| pb::LabelMatcher { r#type: pb::label_matcher::Type::Eq as i32, name: n.into(), value: v.into() };
    let mut matchers = vec![eq("__name__", name)];
    matchers.extend(labels.iter().map(|(k, v)| eq(k, v)));
    let req = pb::ReadRequest {
        queries: vec![pb::Query { start_timestamp_ms: range.0, end_timestamp_ms: range.1, matchers, hints: None }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/read"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    let raw = snap::raw::Decoder::new().decompress_vec(&r.bytes().await?)?;
    let resp = pb::ReadResponse::decode(raw.as_slice())?;
    let mut out: Vec<(i64, u64)> =
        resp.results.iter().flat_map(|q| &q.timeseries).flat_map(|t| &t.samples).map(|s| (s.timestamp, s.value.to_bits())).collect();
    out.sort_unstable();
    Ok(out)
}

/// Samples of one series from VictoriaMetrics' export API.
async fn vm_samples(base: &str, name: &str, labels: &[(&str, &str)], range: (i64, i64)) -> anyhow::Result<Vec<(i64, u64)>> {
    let selector = format!("{name}{{{}}}", labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(","));
    // Percent-encoded by hand: only a selector's few special characters occur.
    let encoded: String = selector
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let text = reqwest::Client::new()
        .get(format!("{base}/api/v1/export?match%5B%5D={encoded}&start={}&end={}", range.0 / 1000, range.1 / 1000 + 1))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vals = v["values"].as_array().cloned().unwrap_or_default();
        for (t, x) in ts.iter().zip(vals) {
            let x = x.as_f64().or_else(|| x.as_str().and_then(|s| s.parse().ok())).unwrap_or(f64::NAN);
            out.push((t.as_i64().unwrap_or_default(), x.to_bits()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Runs the real-agent comparison for `minutes`; returns the markdown table.
pub(crate) async fn run(canopy_bin: &Path, vm_bin: &str, work: &Path, minutes: u64) -> anyhow::Result<String> {
    let canopy_dir = work.join("canopy-real");
    let vm_dir = work.join("vm-real");
    std::fs::create_dir_all(&canopy_dir)?;
    std::fs::create_dir_all(&vm_dir)?;
    let canopy = Peer::canopy(canopy_bin, &canopy_dir)?;
    let vm = Peer::victoria_metrics(vm_bin, &vm_dir).await?;
    let (prom_port, node_port) = (free_port(), free_port());
    let node = Proc(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("prometheus-node-exporter (apt-get install prometheus-node-exporter): {e}"))?,
    );
    let cfg = work.join("prometheus.yml");
    std::fs::write(&cfg, config(prom_port, node_port, &canopy.base, &vm.base, true))?;
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", work.join("prometheus").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("prometheus (apt-get install prometheus): {e}"))?,
    );
    eprintln!("real agents: Prometheus scraping itself and node-exporter every 1 s for {minutes} min");
    tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
    // Stop scraping, then wait for both queues to drain.
    std::fs::write(&cfg, config(prom_port, node_port, &canopy.base, &vm.base, false))?;
    reqwest::Client::new().post(format!("http://127.0.0.1:{prom_port}/-/reload")).send().await?.error_for_status()?;
    let ended_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let mut sent = (0.0, 0.0);
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let text = prometheus_metrics(prom_port).await?;
        let metric = |name: &str, remote: &str| remote_metric(&text, name, remote);
        let pending = metric("prometheus_remote_storage_samples_pending", "canopy")
            + metric("prometheus_remote_storage_samples_pending", "victoria-metrics");
        let now = (
            metric("prometheus_remote_storage_samples_total", "canopy"),
            metric("prometheus_remote_storage_samples_total", "victoria-metrics"),
        );
        if pending == 0.0 && now == sent {
            break;
        }
        sent = now;
    }
    let text = prometheus_metrics(prom_port).await?;
    let failed = remote_metric(&text, "prometheus_remote_storage_samples_failed_total", "canopy")
        + remote_metric(&text, "prometheus_remote_storage_samples_failed_total", "victoria-metrics");
    anyhow::ensure!(failed == 0.0, "{failed} samples failed to reach a peer");
    anyhow::ensure!(sent.0 == sent.1 && sent.0 > 0.0, "the peers were sent different sample counts: {sent:?}");
    drop(prom);
    drop(node);
    canopy.settle().await?;
    vm.settle().await?;
    let range = (started_ms - 60_000, ended_ms + 60_000);
    let mut compared = Vec::new();
    for (name, labels) in COMPARED {
        let (c, v) = (canopy_samples(&canopy.base, name, labels, range).await?, vm_samples(&vm.base, name, labels, range).await?);
        anyhow::ensure!(!c.is_empty(), "{name}: Canopy returned no samples");
        anyhow::ensure!(c == v, "{name}{labels:?}: Canopy has {} samples, VictoriaMetrics {}; they differ", c.len(), v.len());
        compared.push(format!("{name} ({} samples)", c.len()));
    }
    let samples = sent.0;
    let (cb, vb, vi) = (canopy.bytes_on_disk() as f64, vm.bytes_on_disk() as f64, vm.index_bytes() as f64);
    Ok(format!(
        "| data | samples | canopy bytes/sample | victoria-metrics bytes/sample (of which indexdb) | ratio | ratio to VictoriaMetrics' data alone |\n\
         |---|---|---|---|---|---|\n\
         | Prometheus + node-exporter, 1 s scrapes, {minutes} min | {samples:.0} | {:.3} | {:.3} ({:.3}) | {:.2} | {:.2} |\n\n\
         Same samples in both: {}.\n",
        cb / samples,
        vb / samples,
        vi / samples,
        cb / vb,
        cb / (vb - vi),
        compared.join(", ")
    ))
}
