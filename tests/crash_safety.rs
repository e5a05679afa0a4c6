//! Done-means 2 and 3: acknowledged writes survive `kill -9` exactly once,
//! whether they were in parts, in the WAL only, or in flight when the
//! process died; and a restart after a flush returns both kinds once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use canopy_api::v1::measure_service_client::MeasureServiceClient;
use canopy_api::v1::*;
use common::*;
use tokio_stream::StreamExt;

async fn kill_during_streaming_writes(backend: Backend) {
    // Small memtables so flushes (and WAL truncation) happen while writing.
    let mut c = Canopy::start(backend, &["--flush-bytes", "200000", "--flush-interval-secs", "1"]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - 2 * HOUR;
    let all = samples(25, 2_000, start, 1_000_000_000, 3);
    let sent: HashMap<(String, i64), f64> = all.iter().map(|s| ((s.host.clone(), s.ts), s.usage)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    // Answers other than SUCCEED, checked after the crash: the writer task
    // itself must not assert (a panic there would only end the stream).
    let refused: Arc<Mutex<Vec<WriteResponse>>> = Arc::default();

    let writer = {
        let (acked, refused) = (acked.clone(), refused.clone());
        let all = all.clone();
        let addr = c.grpc;
        tokio::spawn(async move {
            let mut client = MeasureServiceClient::connect(format!("http://{addr}")).await.unwrap();
            let batches: Vec<Vec<Sample>> = all.chunks(50).map(|c| c.to_vec()).collect();
            let reqs: Vec<WriteRequest> = batches.iter().enumerate().map(|(i, b)| write_request(b, i as u64)).collect();
            let Ok(resp) = client.write(tokio_stream::iter(reqs)).await else {
                return;
            };
            let mut stream = resp.into_inner();
            // The stream ends with an error when the process is killed.
            while let Some(Ok(r)) = stream.next().await {
                if r.status() == Status::Succeed {
                    acked.lock().unwrap().extend(batches[r.message_id as usize].iter().cloned());
                } else {
                    refused.lock().unwrap().push(r);
                }
            }
        })
    };
    // Let a good share of the stream through (several flushes), then crash.
    let progress = || format!("{} acknowledged", acked.lock().unwrap().len());
    wait_until(60, "too few writes acknowledged before the crash", progress, || std::future::ready(acked.lock().unwrap().len() >= 15_000))
        .await;
    c.kill9();
    writer.await.expect("the writer task failed");
    assert!(refused.lock().unwrap().is_empty(), "writes were refused before the crash: {:?}", refused.lock().unwrap());
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 15_000, "too few writes acknowledged before the crash: {}", acked.len());
    assert!(acked.len() < all.len(), "the crash should interrupt the stream");

    c.restart();
    let http = Http::new(c.http);
    let got = stored(&http, start - 1).await;
    assert_exactly_once(&got, &acked, &sent);
    assert_eq!(total_count(&http, start - 1).await, got.len());

    // A second crash right after recovery replays nothing twice.
    c.kill9();
    c.restart();
    let http = Http::new(c.http);
    assert_eq!(stored(&http, start - 1).await, got);
}

async fn restart_after_flush(backend: Backend) {
    let mut c = Canopy::start(backend, &[]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - 3 * HOUR;
    let flushed = samples(25, 100, start, 60_000_000_000, 11);
    let wal_only = samples(25, 60, start + 100 * 60_000_000_000, 60_000_000_000, 12);
    http.write_ok(&write_request(&flushed, 1)).await;
    assert!(http.flush().await > 0);
    http.write_ok(&write_request(&wal_only, 2)).await;
    let sent: HashMap<(String, i64), f64> = flushed.iter().chain(&wal_only).map(|s| ((s.host.clone(), s.ts), s.usage)).collect();
    let all: Vec<Sample> = flushed.iter().chain(&wal_only).cloned().collect();

    c.kill9();
    c.restart();
    let http = Http::new(c.http);
    let got = stored(&http, start - 1).await;
    assert_eq!(got.len(), all.len());
    assert_exactly_once(&got, &all, &sent);

    // A clean stop flushes the replayed points; the next start still returns each once.
    c.stop();
    c.restart();
    let http = Http::new(c.http);
    let again = stored(&http, start - 1).await;
    assert_eq!(again, got);
    assert_eq!(total_count(&http, start - 1).await, all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_writes_on_local_disk() {
    kill_during_streaming_writes(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_writes_on_s3() {
    kill_during_streaming_writes(Backend::S3).await;
}

#[tokio::test]
async fn restart_after_flush_on_local_disk() {
    restart_after_flush(Backend::Local).await;
}

#[tokio::test]
async fn restart_after_flush_on_s3() {
    restart_after_flush(Backend::S3).await;
}
