//! Done-means 1 (Prometheus): a real Prometheus scrapes itself and
//! node-exporter and remote-writes to Canopy; a second Prometheus whose only
//! storage is Canopy (remote_read) answers instant and range PromQL queries
//! exactly as the first answers from its own TSDB. With tokens, Prometheus'
//! own `authorization` / `basic_auth` settings carry them.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[String]) -> Proc {
    Proc(
        Command::new(bin).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("cannot start {bin} (the test command installs Debian's prometheus and prometheus-node-exporter): {e}")
        }),
    )
}

fn prometheus(dir: &std::path::Path, name: &str, port: u16, config: &str) -> Proc {
    let cfg = dir.join(format!("{name}.yml"));
    std::fs::write(&cfg, config).unwrap();
    spawn(
        "prometheus",
        &[
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join(name).display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    )
}

/// Asks Prometheus' HTTP API, retrying (to a deadline: Prometheus may still
/// be starting) until it answers with success.
async fn api(port: u16, path: &str, params: &[(&str, String)]) -> Value {
    let url = format!("http://127.0.0.1:{port}{path}");
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str()))).finish();
    let answer = std::sync::Mutex::new(None);
    let what = format!("Prometheus on {port} did not answer {path} {params:?}");
    wait_until(90, &what, String::new, || async {
        let req = reqwest::Client::new().post(&url).header("Content-Type", "application/x-www-form-urlencoded").body(body.clone());
        if let Ok(r) = req.send().await
            && let Ok(v) = r.json::<Value>().await
            && v["status"] == "success"
        {
            *answer.lock().unwrap() = Some(v["data"].clone());
            return true;
        }
        false
    })
    .await;
    answer.into_inner().unwrap().expect("answered")
}

/// The result vector/matrix, sorted by labels, as comparable JSON.
fn normalized(data: &Value) -> Vec<Value> {
    let mut r = data["result"].as_array().cloned().unwrap_or_default();
    r.sort_by_key(|s| s["metric"].to_string());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_back_what_it_wrote_through_canopy() {
    let c = Canopy::start(Backend::Local, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (node_port, a_port, b_port) = (free_port(), free_port(), free_port());
    let _node = spawn("prometheus-node-exporter", &[format!("--web.listen-address=127.0.0.1:{node_port}")]);
    let _a = prometheus(
        dir.path(),
        "a",
        a_port,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{a_port}']}}]\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\nremote_write:\n  - url: http://{}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n",
            c.http
        ),
    );
    // Compare an 8 s window that starts once Prometheus serves, and wait
    // (to a deadline) until it has shipped everything up to the window's end.
    api(a_port, "/api/v1/query", &[("query", "up".into())]).await;
    let ready = now_nanos() as f64 / 1e9;
    let start = ready.floor() + 2.0;
    let end = start + 8.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let sent =
            api(a_port, "/api/v1/query", &[("query", "min(prometheus_remote_storage_queue_highest_sent_timestamp_seconds)".into())]).await;
        let t: f64 = sent["result"][0]["value"][1].as_str().unwrap_or("0").parse().unwrap_or(0.0);
        if t >= end + 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Prometheus never shipped samples up to {end} (highest sent: {t})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _b = prometheus(
        dir.path(),
        "b",
        b_port,
        &format!("global:\n  scrape_interval: 1h\nremote_read:\n  - url: http://{}/api/v1/read\n    read_recent: true\n", c.http),
    );
    let instant = [
        "up",
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "sum by (mode) (node_cpu_seconds_total)",
        "prometheus_tsdb_head_series",
        "count by (job) ({__name__=~\"go_.*\"})",
        "node_filesystem_avail_bytes{fstype!=\"tmpfs\"}",
    ];
    let ranges = [
        "up",
        "rate(node_cpu_seconds_total{mode=~\"idle|user\"}[3s])",
        "scrape_duration_seconds",
        "rate(prometheus_http_requests_total[4s])",
    ];
    let mut compared = 0;
    for q in instant {
        let params = [("query", q.to_string()), ("time", format!("{end}"))];
        let (a, b) = (api(a_port, "/api/v1/query", &params).await, api(b_port, "/api/v1/query", &params).await);
        assert!(!normalized(&a).is_empty(), "{q}: Prometheus itself has no data");
        assert_eq!(normalized(&a), normalized(&b), "instant query {q}");
        compared += 1;
    }
    for q in ranges {
        let params = [("query", q.to_string()), ("start", format!("{start}")), ("end", format!("{end}")), ("step", "1".into())];
        let (a, b) = (api(a_port, "/api/v1/query_range", &params).await, api(b_port, "/api/v1/query_range", &params).await);
        assert!(!normalized(&a).is_empty(), "{q}: Prometheus itself has no data");
        assert_eq!(normalized(&a), normalized(&b), "range query {q}");
        compared += 1;
    }
    assert_eq!(compared, instant.len() + ranges.len());
}

/// With `--auth-tokens-file`, Prometheus' own `authorization` settings are
/// all it takes: a write token for remote write, a read token for remote
/// read; a Prometheus without a token has its samples refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_writes_and_reads_with_its_authorization_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), format!("write {}\nread {}\n", sha256_hex("prom-w-83"), sha256_hex("prom-r-19"))).unwrap();
    let c = Canopy::start(Backend::Local, &["--auth-tokens-file", dir.path().join("tokens").to_str().unwrap()]);
    let (a_port, b_port, x_port) = (free_port(), free_port(), free_port());
    let scrape_self = |port: u16| {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    };
    let queue = "    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}\n";
    let _a = prometheus(
        dir.path(),
        "a",
        a_port,
        &format!(
            "{}remote_write:\n  - url: http://{}/api/v1/write\n    authorization: {{credentials: prom-w-83}}\n{queue}",
            scrape_self(a_port),
            c.http
        ),
    );
    let _x = prometheus(
        dir.path(),
        "x",
        x_port,
        &format!("{}remote_write:\n  - url: http://{}/api/v1/write\n{queue}", scrape_self(x_port), c.http),
    );
    let _b = prometheus(
        dir.path(),
        "b",
        b_port,
        &format!(
            "global:\n  scrape_interval: 1h\nremote_read:\n  - url: http://{}/api/v1/read\n    read_recent: true\n    basic_auth: {{username: grafana, password: prom-r-19}}\n",
            c.http
        ),
    );
    // B reads what A wrote, through Canopy, once A has shipped some.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = api(b_port, "/api/v1/query", &[("query", format!("up{{instance=\"127.0.0.1:{a_port}\"}}"))]).await;
        if got["result"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no sample of A's came back through Canopy with the tokens");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // X, without a token, is refused: Prometheus counts its samples as failed.
    loop {
        let failed = api(x_port, "/api/v1/query", &[("query", "sum(prometheus_remote_storage_samples_failed_total)".into())]).await;
        let n: f64 = failed["result"][0]["value"][1].as_str().unwrap_or("0").parse().unwrap_or(0.0);
        if n > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the Prometheus without a token was never refused");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let x_up = api(b_port, "/api/v1/query", &[("query", format!("up{{instance=\"127.0.0.1:{x_port}\"}}"))]).await;
    assert_eq!(x_up["result"], serde_json::json!([]), "nothing of X's was stored");
}
