//! The read path against an object store with S3's latency: Canopy
//! standalone on the in-process S3 server behind a proxy that holds every
//! response back (`--object-latency-ms`, ~30 ms first byte like S3), one
//! day of TSBS data, and one query aggregating all of it, run
//!
//! * cold — a fresh process with an empty part cache,
//! * warm from disk — a fresh process on the cache directory the cold run filled,
//! * warm from memory — the same process again,
//! * local disk — the same parts in a local directory, memory tier only (as
//!   standalone runs on a local store), warm: the figure to match,
//! * fanned out — the same data on a cluster, read cold by one querier, two,
//!   and the query function under `cargo lambda watch` ([`crate::fan_out`]),
//!
//! each with the query's own stats (requests, bytes, cache hits, parts,
//! invocations) and what it costs at S3's and Lambda's list prices.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_api::v1::{QueryRequest, QueryResponse, QueryStats};
use canopy_bench::latency_proxy::LatencyProxy;
use canopy_bench::s3::{S3_BUCKET, S3_KEY, S3_SECRET, S3Server};
use canopy_bench::tsbs;

use crate::load;
use crate::peers::Peer;

/// Flushes while loading: the parts per shard the query reads.
const FLUSHES: usize = 12;

/// One phase's figures: its timings and the stats of its last query.
pub(crate) struct Phase {
    pub(crate) name: &'static str,
    millis: Vec<f64>,
    stats: QueryStats,
}

impl Phase {
    /// A phase with nothing measured yet.
    pub(crate) fn new(name: &'static str) -> Phase {
        Phase { name, millis: Vec::new(), stats: QueryStats::default() }
    }

    /// One query's time and stats.
    pub(crate) fn add(&mut self, ms: f64, stats: QueryStats) {
        self.millis.push(ms);
        self.stats = stats;
    }
}

/// Runs a query; its time, stats and number of points.
pub(crate) async fn run_query(base: &str, q: &QueryRequest) -> anyhow::Result<(f64, QueryStats, usize)> {
    let t = Instant::now();
    let r = reqwest::Client::new().post(format!("{base}/api/v1/measure/data")).json(q).send().await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(status.is_success(), "query failed: {body}");
    let resp: QueryResponse = serde_json::from_value(body)?;
    Ok((ms, resp.stats.unwrap_or_default(), resp.data_points.len()))
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the read-path benchmark and returns its markdown table.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    bin: &Path,
    work: &Path,
    latency: Duration,
    hosts: Arc<Vec<tsbs::Host>>,
    rows: Arc<Vec<tsbs::Row>>,
    range_ms: (i64, i64),
    repeats: usize,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<String> {
    let s3 = S3Server::start();
    let proxy = LatencyProxy::start(([127, 0, 0, 1], s3.port).into(), latency).await?;
    let dir = work.join("read-path");
    let cache = dir.join("part-cache");
    std::fs::create_dir_all(&dir)?;
    let store: Vec<String> = [
        "--object-store",
        &format!("s3://{S3_BUCKET}"),
        "--s3-endpoint",
        &format!("http://{}", proxy.addr),
        "--s3-access-key-id",
        S3_KEY,
        "--s3-secret-access-key",
        S3_SECRET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut on_s3 = store.clone();
    on_s3.extend(["--cache-dir".to_string(), cache.to_string_lossy().into_owned()]);
    let q = crate::queries::max_all_fields_per_host(range_ms.0, range_ms.1);

    let peer = Peer::canopy_with(bin, &dir, &on_s3)?;
    eprintln!("read path: loading {} rows onto S3 with {} ms per request, {FLUSHES} flushes", rows.len(), latency.as_millis());
    // Flushed in slices and not compacted: many parts per shard, as a day
    // looks before compaction catches up, so the cold read shows what the
    // part count costs.
    load::load_in_flushed_slices(&peer.base, hosts.clone(), &rows, FLUSHES, batch, concurrency).await?;
    peer.stop()?;

    let mut phases = Vec::new();
    // Cold: a new process, an empty cache; then warm from disk: a new
    // process on the cache directory the cold run filled. Each `repeats`
    // times (a single first query is too noisy to judge).
    let (mut cold, mut disk) = (Phase::new("cold (empty cache)"), Phase::new("warm, disk tier (after a restart)"));
    let mut points = 0;
    for _ in 0..repeats.max(1) {
        let _ = std::fs::remove_dir_all(&cache);
        let peer = Peer::canopy_with(bin, &dir, &on_s3)?;
        let (ms, stats, n) = run_query(&peer.base, &q).await?;
        points = n;
        cold.add(ms, stats);
        peer.stop()?;
        let peer = Peer::canopy_with(bin, &dir, &on_s3)?;
        let (ms, stats, again) = run_query(&peer.base, &q).await?;
        anyhow::ensure!(again == points, "warm-disk answer has {again} points, cold had {points}");
        disk.add(ms, stats);
        peer.stop()?;
    }
    phases.push(cold);
    phases.push(disk);
    let peer = Peer::canopy_with(bin, &dir, &on_s3)?;
    run_query(&peer.base, &q).await?;
    // Warm from memory: the same process again.
    let mut millis = Vec::new();
    let mut stats = QueryStats::default();
    for _ in 0..repeats.max(1) {
        let (ms, s, _) = run_query(&peer.base, &q).await?;
        millis.push(ms);
        stats = s;
    }
    phases.push(Phase { name: "warm, memory tier", millis, stats });
    peer.stop()?;
    // The same parts in a local directory, as standalone runs by default
    // (memory tier only): the figure warm runs are judged by.
    let local = dir.join("local-objects");
    copy_dir(&s3.bucket_dir(), &local)?;
    let local_args: Vec<String> =
        ["--object-store", &local.to_string_lossy(), "--cache-dir", "off"].iter().map(|s| s.to_string()).collect();
    let peer = Peer::canopy_with(bin, &dir, &local_args)?;
    let mut millis = Vec::new();
    let mut stats = QueryStats::default();
    for _ in 0..repeats.max(1) + 1 {
        let (ms, s, _) = run_query(&peer.base, &q).await?;
        millis.push(ms);
        stats = s;
    }
    millis.remove(0);
    phases.push(Phase { name: "local disk (warm; memory tier only)", millis, stats });
    peer.stop()?;
    let local_ms = p50(&phases[3].millis);
    // The same data on a cluster, read cold by one querier, two, and the
    // query function.
    let fanned = crate::fan_out::run(bin, work, &store, &q, hosts, rows, FLUSHES, repeats, batch, concurrency).await?;
    phases.extend(fanned.into_iter().flatten());

    let mut out = format!(
        "Read path: one day of TSBS data ({points} hosts), MAX of all ten fields per host, S3 behind a {} ms first-byte proxy\n\n\
         | phase | p50 ms (min–max) | vs local disk | requests | bytes | cache hits mem / disk | misses | parts scanned / skipped | invocations | round trips (ms / latency) | $ per 1M queries |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        latency.as_millis()
    );
    for p in &phases {
        let ms = p50(&p.millis);
        let s = &p.stats;
        let requests = s.object_store_requests;
        out.push_str(&format!(
            "| {} | {ms:.1} ({:.0}–{:.0}) | {:.2} | {requests} | {} | {} / {} | {} | {} / {} | {} | {:.1} | {:.2} |\n",
            p.name,
            p.millis.iter().copied().fold(f64::MAX, f64::min),
            p.millis.iter().copied().fold(0.0, f64::max),
            ms / local_ms,
            s.object_store_bytes,
            s.cache_memory_hits,
            s.cache_disk_hits,
            s.cache_misses,
            s.parts_scanned,
            s.parts_skipped,
            s.lambda_invocations,
            ms / latency.as_millis().max(1) as f64,
            crate::fan_out::usd_per_query(requests, s.lambda_invocations, ms) * 1e6,
        ));
    }
    drop(proxy);
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}
