//! Sustained overload: writers faster than flushes, against a tiny memtable
//! budget. Writes beyond the budget are refused with 429 RESOURCE_EXHAUSTED
//! (never buffered without bound), writers that back off and retry get every
//! point in, and every acknowledged point reads back exactly once.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_past_a_tiny_budget_get_429s_then_land_every_point_exactly_once() {
    // 2 MiB of memtables; flushes only by age (every second or so), so
    // between flushes the writers outrun them.
    let c =
        Canopy::start(Backend::Local, &["--memtable-bytes-max", "2097152", "--flush-bytes", "1073741824", "--flush-interval-secs", "1"]);
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
