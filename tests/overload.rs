//! Sustained overload: writers faster than flushes, against a tiny memory
//! budget. Writes beyond the budget are refused with 429 RESOURCE_EXHAUSTED
//! (never buffered without bound), writers that back off and retry get every
//! point in, and every acknowledged point reads back exactly once.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canopy_api::v1::query_request::{Aggregation, GroupBy};
use canopy_api::v1::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_past_a_tiny_budget_get_429s_then_land_every_point_exactly_once() {
    // A 2 MiB budget, and every flush waits 300 ms before uploading (a slow
    // object store), so the writers outrun the flushes the budget starts.
    let c = Canopy::start(
        Backend::Local,
        &[
            "--memory-budget-bytes",
            "2097152",
            "--flush-bytes",
            "1073741824",
            "--flush-interval-secs",
            "1",
            "--fault-stall-uploads-ms",
            "300",
        ],
    );
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - HOUR;
    let all = samples(50, 600, start, 1_000_000_000, 5);
    let chunks: VecDeque<(u64, Vec<Sample>)> = all.chunks(200).enumerate().map(|(i, c)| (i as u64, c.to_vec())).collect();
    let queue = Arc::new(Mutex::new(chunks));
    let refused = Arc::new(Mutex::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (http, queue, refused) = (http.clone(), queue.clone(), refused.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let Some((id, chunk)) = queue.lock().unwrap().pop_front() else { return acked };
                assert!(Instant::now() < deadline, "the writes did not all land within 90 s");
                let (status, body) = http.post("/api/v1/measure/write", &write_request(&chunk, id)).await;
                match status {
                    200 => acked.extend(chunk),
                    429 => {
                        assert_eq!(body["status"], "STATUS_RESOURCE_EXHAUSTED", "{body}");
                        *refused.lock().unwrap() += 1;
                        // Back off, and try this batch again later.
                        queue.lock().unwrap().push_back((id, chunk));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("write answered {other}: {body}"),
                }
            }
        }));
    }
    let mut oracle = Oracle::default();
    let mut acked = 0;
    for w in writers {
        for s in w.await.unwrap() {
            oracle.add(&s);
            acked += 1;
        }
    }
    let refused = *refused.lock().unwrap();
    assert_eq!(acked, all.len(), "every batch was acknowledged in the end");
    assert!(refused > 0, "the budget never refused a write: this load did not overload it");
    http.flush().await;
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}

/// Headroom over the budget that the process's peak RSS may take. Measured
/// here (debug build): ~70 MiB whatever the budget (4 to 16 MiB) — the
/// liaison's requests in flight (bodies, parsed rows, WAL encodings of four
/// ~0.5 MB writes, refused ones included), the runtime's threads and encoder
/// contexts, and pages the allocator frees only after a delay (~40 MiB of it
/// goes with `MIMALLOC_PURGE_DELAY=0`). Unbounded, this load peaks ~200 MiB
/// over the start.
const OVERHEAD_BYTES: u64 = 96 << 20;

/// One line-protocol batch: `per_host` points of each of `hosts` hosts
/// after point `first`, each with a unique `n` and ~1 KB of string so that
/// memory fills quickly.
fn blob_lines(hosts: usize, first: usize, points: usize, start_secs: i64) -> String {
    let mut body = String::new();
    for i in first..first + points {
        let (host, step) = (i % hosts, i / hosts);
        let pad: String = std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), 1000).collect();
        body.push_str(&format!("blob,host=h{host:03} n={i}i,pad=\"{pad}{i}\" {}\n", start_secs + step as i64));
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_stays_within_the_budget_while_uploads_stall() {
    const BUDGET: u64 = 8 << 20;
    const HOSTS: usize = 40;
    const POINTS: usize = 150_000;
    const BATCH: usize = 500;
    // No flush by size or age: only the budget flushes, and every flush
    // waits half a second before uploading, as behind a slow object store.
    // Unbounded, the memtables would take ~170 MB. Compaction is off: a
    // merge reads its segment's parts into memory, the compactor's memory and
    // not ingest's.
    let budget = BUDGET.to_string();
    let c = Canopy::start(
        Backend::Local,
        &[
            "--memory-budget-bytes",
            &budget,
            "--flush-bytes",
            "1073741824",
            "--flush-interval-secs",
            "3600",
            "--fault-stall-uploads-ms",
            "500",
            "--compaction-interval-secs",
            "0",
        ],
    );
    let url = format!("http://{}/write?db=overload&precision=s", c.http);
    let start_secs = now_nanos() / 1_000_000_000 - 2 * 3600;
    let (s, b) = post_bytes_text(&url, blob_lines(HOSTS, POINTS, 1, start_secs).as_bytes(), Encoding::Identity).await;
    assert_eq!(s, 204, "{b}");
    let baseline = c.peak_rss_bytes();

    let queue: VecDeque<usize> = (0..POINTS).step_by(BATCH).collect();
    let queue = Arc::new(Mutex::new(queue));
    let refused = Arc::new(Mutex::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (url, queue, refused) = (url.clone(), queue.clone(), refused.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let Some(first) = queue.lock().unwrap().pop_front() else { return };
                assert!(Instant::now() < deadline, "the writes did not all land within 240 s");
                let body = blob_lines(HOSTS, first, BATCH, start_secs);
                match post_bytes_text(&url, body.as_bytes(), Encoding::Identity).await {
                    (204, _) => {}
                    (429, _) => {
                        *refused.lock().unwrap() += 1;
                        queue.lock().unwrap().push_back(first);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    (other, body) => panic!("write answered {other}: {body}"),
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let peak = c.peak_rss_bytes();
    let refused = *refused.lock().unwrap();
    eprintln!("peak RSS {} MiB (at start {} MiB), {refused} writes refused", peak >> 20, baseline >> 20);
    assert!(refused > 0, "the budget never refused a write: this load did not overload it");
    assert!(
        peak <= baseline + BUDGET + OVERHEAD_BYTES,
        "peak RSS {} MiB: more than the {} MiB at start + the {} MiB budget + {} MiB overhead",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20,
        OVERHEAD_BYTES >> 20
    );

    // Every point exactly once: per host, the count and the sum of `n`.
    let http = Http::new(c.http);
    let per_host = |f: AggregationFunction| QueryRequest {
        groups: vec!["overload".into()],
        name: "blob".into(),
        time_range: time_range((start_secs - 1) * 1_000_000_000, now_nanos() + HOUR),
        group_by: Some(GroupBy { tag_projection: Some(projection("labels", &["host"])), field_name: "n".into(), bucket_millis: 0 }),
        agg: Some(Aggregation { function: f as i32, field_name: "n".into(), field_names: vec![] }),
        ..Default::default()
    };
    let in_host = |h: usize| (0..POINTS).filter(move |i| i % HOSTS == h);
    for f in [AggregationFunction::Count, AggregationFunction::Sum] {
        let want = |h: usize| if f == AggregationFunction::Count { in_host(h).count() as f64 } else { in_host(h).sum::<usize>() as f64 };
        let got = http.query(&per_host(f)).await;
        let mut by_host: Vec<(String, f64)> = got.data_points.iter().map(|d| (tag_of(d, "host"), field_of(d, "n"))).collect();
        by_host.sort_by(|a, b| a.0.cmp(&b.0));
        // The warm-up point (n = POINTS) went to h000.
        let expected: Vec<(String, f64)> = (0..HOSTS)
            .map(|h| {
                let extra = if h == 0 { if f == AggregationFunction::Count { 1.0 } else { POINTS as f64 } } else { 0.0 };
                (format!("h{h:03}"), want(h) + extra)
            })
            .collect();
        assert_eq!(by_host, expected, "{f:?} per host");
    }
}
