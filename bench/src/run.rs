//! Running a query type on both peers: the first run, then warm repeats;
//! latency percentiles and the comparison of the answers.

use std::time::Instant;

use serde_json::{Value, json};

use crate::queries::{Answer, PromQuery, QueryCase, canopy_answer, compare, vm_answer};

/// Latencies (ms) and comparison of one query type.
pub(crate) struct CaseResult {
    pub(crate) name: &'static str,
    pub(crate) canopy_first: f64,
    pub(crate) canopy_warm: Vec<f64>,
    pub(crate) vm_first: f64,
    pub(crate) vm_warm: Vec<f64>,
    pub(crate) compared: Result<(), String>,
}

impl CaseResult {
    /// Canopy's warm median over VictoriaMetrics' (lower is better).
    pub(crate) fn warm_p50_ratio(&self) -> f64 {
        percentile(&self.canopy_warm, 0.5) / percentile(&self.vm_warm, 0.5)
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

async fn canopy(client: &reqwest::Client, base: &str, case: &QueryCase) -> anyhow::Result<(f64, Answer)> {
    let body = serde_json::to_string(&case.canopy)?;
    let t0 = Instant::now();
    let r = client.post(format!("{base}/api/v1/measure/data")).body(body).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(status.is_success(), "canopy {}: {v}", case.name);
    Ok((ms, canopy_answer(&v, case.by_host)?))
}

async fn vm(client: &reqwest::Client, base: &str, case: &QueryCase) -> anyhow::Result<(f64, Answer)> {
    let mut answer = Answer::new();
    let t0 = Instant::now();
    for q in &case.vm {
        let (path, params) = match q {
            PromQuery::Instant { query, time_ms, .. } => {
                ("query", vec![("query", query.clone()), ("time", format!("{:.3}", *time_ms as f64 / 1000.0))])
            }
            PromQuery::Range { query, start_ms, end_ms, step_ms, .. } => (
                "query_range",
                vec![
                    ("query", query.clone()),
                    ("start", format!("{:.3}", *start_ms as f64 / 1000.0)),
                    ("end", format!("{:.3}", *end_ms as f64 / 1000.0)),
                    ("step", format!("{}ms", step_ms)),
                    ("nocache", "1".into()),
                ],
            ),
        };
        let url = format!("{base}/api/v1/{path}");
        let body: String = params.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
        let r = client.post(url).header("Content-Type", "application/x-www-form-urlencoded").body(body).send().await?;
        let v: Value = r.json().await?;
        anyhow::ensure!(v["status"] == "success", "victoria-metrics {}: {v}", case.name);
        vm_answer(&v["data"], q, case.by_host, &mut answer);
    }
    Ok((t0.elapsed().as_secs_f64() * 1000.0, answer))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Repeats a query type on Canopy alone for `for_how_long` (for profiling);
/// returns how many runs finished.
pub(crate) async fn repeat_canopy(base: &str, case: &QueryCase, for_how_long: std::time::Duration) -> anyhow::Result<usize> {
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < for_how_long {
        canopy(&client, base, case).await?;
        n += 1;
    }
    Ok(n)
}

/// Runs one query type on both peers and compares the answers.
pub(crate) async fn run_case(canopy_base: &str, vm_base: &str, case: &QueryCase, repeats: usize) -> anyhow::Result<CaseResult> {
    let client = reqwest::Client::new();
    let (canopy_first, a) = canopy(&client, canopy_base, case).await?;
    let (vm_first, b) = vm(&client, vm_base, case).await?;
    let mut canopy_warm = Vec::with_capacity(repeats);
    let mut vm_warm = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        canopy_warm.push(canopy(&client, canopy_base, case).await?.0);
        vm_warm.push(vm(&client, vm_base, case).await?.0);
    }
    Ok(CaseResult { name: case.name, canopy_first, canopy_warm, vm_first, vm_warm, compared: compare(case.name, &a, &b) })
}

/// The latency table.
pub(crate) fn markdown(rs: &[CaseResult]) -> String {
    let mut s = String::from(
        "| query | canopy p50 / p95 warm (ms) | vm p50 / p95 warm (ms) | canopy / vm first run (ms) | warm p50 ratio (lower is better) | answers |\n|---|---|---|---|---|---|\n",
    );
    for r in rs {
        let (cp50, cp95, vp50, vp95) =
            (percentile(&r.canopy_warm, 0.5), percentile(&r.canopy_warm, 0.95), percentile(&r.vm_warm, 0.5), percentile(&r.vm_warm, 0.95));
        s.push_str(&format!(
            "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {} |\n",
            r.name,
            cp50,
            cp95,
            vp50,
            vp95,
            r.canopy_first,
            r.vm_first,
            cp50 / vp50,
            if r.compared.is_ok() { "equal" } else { "DIFFER" }
        ));
    }
    s
}

/// The latency figures as JSON.
pub(crate) fn json(rs: &[CaseResult]) -> Value {
    json!(
        rs.iter()
            .map(|r| json!({
                "query": r.name,
                "canopy_ms": {"first": r.canopy_first, "p50": percentile(&r.canopy_warm, 0.5), "p95": percentile(&r.canopy_warm, 0.95)},
                "victoria_metrics_ms": {"first": r.vm_first, "p50": percentile(&r.vm_warm, 0.5), "p95": percentile(&r.vm_warm, 0.95)},
                "answers_equal": r.compared.is_ok(),
            }))
            .collect::<Vec<_>>()
    )
}
