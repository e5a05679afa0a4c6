//! Faults of the object store under ingest, with real processes: the store
//! unreachable for a while, and slow throughout. Each ends with the oracle:
//! every acknowledged point exactly once. Each prints what the fault did
//! (docs/operations.md, "Faults", has the measured figures).

mod common;

use std::time::{Duration, Instant};

use canopy_bench::latency_proxy::LatencyProxy;
use common::*;

/// Standalone on S3 behind a proxy that can slow or cut the store, with
/// small, frequent flushes so that the fault hits flushes in flight.
async fn canopy_behind(latency: Duration) -> (Canopy, LatencyProxy, S3Server) {
    let s3 = S3Server::start();
    let proxy = LatencyProxy::start(format!("127.0.0.1:{}", s3.port).parse().unwrap(), latency).await.unwrap();
    let endpoint = format!("http://{}", proxy.addr);
    let c = Canopy::start(
        Backend::Local,
        &[
            "--object-store",
            &format!("s3://{S3_BUCKET}"),
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key-id",
            S3_KEY,
            "--s3-secret-access-key",
            S3_SECRET,
            "--flush-bytes",
            "200000",
            "--flush-interval-secs",
            "1",
        ],
    );
    (c, proxy, s3)
}

/// Writes `batches` batches of 100 samples one after another; answers the
/// acknowledged samples and when each batch was acknowledged.
async fn write_for(http: &Http, start: i64, batches: usize, pace: Duration) -> (Vec<Sample>, Vec<Instant>) {
    let all = samples(20, batches * 5, start, 1_000_000_000, 17);
    let (mut acked, mut at) = (Vec::new(), Vec::new());
    for (i, chunk) in all.chunks(100).enumerate() {
        let (status, body) = http.post("/api/v1/measure/write", &write_request(chunk, i as u64)).await;
        assert_eq!(status, 200, "batch {i}: {body}");
        acked.extend_from_slice(chunk);
        at.push(Instant::now());
        tokio::time::sleep(pace).await;
    }
    (acked, at)
}

/// Counts every point of the test measure.
fn count_query(start: i64) -> canopy_api::v1::QueryRequest {
    use canopy_api::v1::query_request::Aggregation;
    canopy_api::v1::QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: time_range(start - 1, now_nanos() + HOUR),
        agg: Some(Aggregation {
            function: canopy_api::v1::AggregationFunction::Count as i32,
            field_name: "usage".into(),
            field_names: vec![],
        }),
        ..Default::default()
    }
}

/// Waits until the memtables are flushed (the store took every part);
/// answers how long that took.
async fn flushed_within(http: &Http, limit: Duration) -> Duration {
    let t = Instant::now();
    while http.metric("canopy_memtable_bytes{role=\"standalone\"}").await > 0.0 {
        assert!(t.elapsed() < limit, "memtables not flushed within {limit:?} of the store's return");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_store_down_during_ingest_loses_nothing() {
    let (c, proxy, _s3) = canopy_behind(Duration::ZERO).await;
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - HOUR;
    // Writes keep going (about 10 batches a second, for ~75 s); after 3 s
    // the store goes away for 60 s.
    let outage = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set_down(true);
        let down_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // A query that needs the parts flushed before the outage.
        let (status, body) = http.post("/api/v1/measure/data", &count_query(start)).await;
        tokio::time::sleep(Duration::from_secs(50)).await;
        proxy.set_down(false);
        (down_at, Instant::now(), status, body)
    };
    let ((acked, at), (down_at, up_at, status, body)) = tokio::join!(write_for(&http, start, 750, Duration::from_millis(100)), outage);
    assert_eq!(status, 503, "a query needing parts while the store is down: {body}");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    let during = at.iter().filter(|&&t| t > down_at && t < up_at).count();
    assert!(during > 300, "only {during} batches were acknowledged while the store was down");
    assert!(at.last().unwrap() > &up_at, "writes went on past the outage");
    // Queries of memtable data keep working too (none of it is in parts yet).
    let recovered = flushed_within(&http, Duration::from_secs(60)).await;
    eprintln!(
        "FAULT object store down 60 s: {during} batches acknowledged during it; a query needing parts: {status} {}; memtables flushed {recovered:?} after its return",
        body["message"]
    );
    let mut oracle = Oracle::default();
    acked.iter().for_each(|s| oracle.add(s));
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_object_store_slows_flushes_not_writes() {
    // Every response of the store waits 400 ms (its first byte).
    let (c, _proxy, _s3) = canopy_behind(Duration::from_millis(400)).await;
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - HOUR;
    let t = Instant::now();
    let (acked, _) = write_for(&http, start, 120, Duration::from_millis(50)).await;
    let writing = t.elapsed();
    let flushed = flushed_within(&http, Duration::from_secs(60)).await;
    eprintln!("FAULT object store +400 ms per response: 120 batches written in {writing:?}; memtables flushed {flushed:?} later");
    let mut oracle = Oracle::default();
    acked.iter().for_each(|s| oracle.add(s));
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}

/// A small tmpfs mounted for the test's life (needs root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, bytes: usize) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_volume_refuses_writes_until_a_flush_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    // The WAL on a 1 MiB volume; parts elsewhere. No flush by size or age:
    // only a full WAL makes one.
    let Some(_volume) = Tmpfs::mount(&dir.path().join("data"), 1 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let objects = dir.path().join("objects");
    let c = Canopy::start_on(
        dir.path().join("data"),
        Backend::Local,
        &["--object-store", objects.to_str().unwrap(), "--flush-bytes", "1073741824", "--flush-interval-secs", "3600"],
    );
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - HOUR;
    let all = samples(40, 1500, start, 1_000_000_000, 23);
    let (mut refused, mut first_refusal, mut recovered) = (0, None, None);
    let mut oracle = Oracle::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, chunk) in all.chunks(100).enumerate() {
        loop {
            assert!(Instant::now() < deadline, "batch {i} not acknowledged within 120 s");
            let (status, body) = http.post("/api/v1/measure/write", &write_request(chunk, i as u64)).await;
            if status == 200 {
                if first_refusal.is_some() && recovered.is_none() {
                    recovered = Some(Instant::now());
                }
                break;
            }
            assert_eq!(status, 429, "batch {i}: {body}");
            assert!(body["message"].as_str().unwrap_or_default().contains("WAL volume"), "{body}");
            refused += 1;
            first_refusal.get_or_insert_with(Instant::now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        chunk.iter().for_each(|s| oracle.add(s));
    }
    assert!(refused > 0, "the WAL volume never filled: this load did not reach it");
    let recovery = recovered.unwrap() - first_refusal.unwrap();
    eprintln!(
        "FAULT WAL volume full (1 MiB): {refused} writes refused with 429; writes acknowledged again {recovery:?} after the first refusal"
    );
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liaison_killed_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(2, &["--flush-bytes", "200000", "--flush-interval-secs", "1"]);
    let standby = cluster.add_liaison("liaison-standby", &[], &[]);
    let urls = [format!("http://{}/api/v1/measure/write", cluster.liaison.http), format!("http://{}/api/v1/measure/write", standby.http)];
    create_schema(&Http::new(cluster.liaison.http)).await;
    let start = now_nanos() - HOUR;
    let all = samples(20, 600, start, 1_000_000_000, 29);
    let queue: Vec<(usize, Vec<Sample>)> = all.chunks(100).map(|c| c.to_vec()).enumerate().collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_over = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (queue, acked, killed, failed_over, urls) = (queue.clone(), acked.clone(), killed.clone(), failed_over.clone(), urls.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut mine = Vec::new();
            loop {
                let Some((i, chunk)) = queue.lock().unwrap().pop() else { return mine };
                let body = serde_json::to_string(&write_request(&chunk, i as u64)).unwrap();
                // Through the first liaison until it is gone, then the other;
                // a request cut by the kill is sent again (the same points
                // and versions: stored once).
                loop {
                    let url = &urls[killed.load(std::sync::atomic::Ordering::Relaxed) as usize];
                    match client.post(url).body(body.clone()).send().await {
                        Ok(r) if r.status() == 200 => break,
                        Ok(r) => panic!("batch {i}: {} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(_) => {
                            failed_over.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                mine.extend(chunk);
            }
        }));
    }
    // kill -9 with writes in flight.
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.liaison.kill9();
    killed.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut oracle = Oracle::default();
    for w in writers {
        w.await.unwrap().iter().for_each(|s| oracle.add(s));
    }
    assert_eq!(oracle.rows.len(), all.len(), "every batch was acknowledged in the end");
    let cut = failed_over.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("FAULT liaison kill -9 under load (4 writers): {cut} requests cut and sent again through another liaison");
    check_against_oracle(&Http::new(standby.http), &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_killed_mid_merge_under_load_loses_nothing_and_its_claim_lapses() {
    let c = Canopy::start(Backend::Local, &["--compaction-interval-secs", "0"]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - 2 * HOUR;
    let mut oracle = Oracle::default();
    // Eight flushes of overlapping data: eight parts per segment to merge.
    write_overlapping_rounds(&http, start, 8, 8, &mut oracle).await;
    // A compactor whose merges wait between upload and commit; killed there.
    let ttl = ["--compaction-claim-ttl-secs", "3"];
    let mut doomed = c.spawn_compactor_once(&[ttl[0], ttl[1], "--fault-stall-merge-commit-ms", "60000"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..3).all(|shard| c.newest_catalog(shard)["claims"].as_array().unwrap().is_empty()) {
        assert!(Instant::now() < deadline, "the compactor never claimed a segment");
        assert!(doomed.try_wait().unwrap().is_none(), "the compactor ended before it could be killed mid-merge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // its upload done, its commit waiting
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed_at = Instant::now();
    // Writes and flushes go on meanwhile; queries answer as before.
    for round in 8..12i64 {
        let batch = samples(8, 100, start + round * 1_000_000_000, 60_000_000_000, round as u64);
        http.write_ok(&write_request(&batch, round as u64)).await;
        batch.iter().for_each(|s| oracle.add(s));
        http.flush().await;
    }
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
    // Once the claim lapses another compactor merges the segment.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed_at.elapsed()) + Duration::from_millis(500)).await;
    let mut next = c.spawn_compactor_once(&ttl);
    assert!(next.wait().unwrap().success(), "log:\n{}", c.log());
    for shard in 0..3 {
        let cat = c.newest_catalog(shard);
        assert_eq!(cat["claims"], serde_json::json!([]), "shard {shard}: a claim left behind: {cat}");
        let per_segment = c.parts_per_segment(shard);
        assert!(per_segment.values().all(|&n| n <= 4), "shard {shard} not compacted: {per_segment:?}");
    }
    eprintln!(
        "FAULT compactor kill -9 mid-merge: writes and queries unaffected; the segment merged by the next compactor once the 3 s claim lapsed"
    );
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}
