//! Limits answer with their documented status: the query deadline
//! (DEADLINE_EXCEEDED), `limit` defaults to 100 and offset + limit may not
//! pass 100,000 (INVALID_ARGUMENT), at most 100,000 points per write
//! (INVALID_ARGUMENT), a full memtable budget refuses writes
//! (RESOURCE_EXHAUSTED, HTTP 429) until a flush frees it, so does a full
//! shard write queue, and a shard with more rows than a query may hold is
//! RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};

use canopy_api::v1::*;
use canopy_ingester::Ingester;
use canopy_liaison::{Code, Gateway};
use canopy_model::{LIMIT_DEFAULT, LIMIT_MAX, nanos_to_timestamp as ts, now_nanos};

mod support;

use support::HOUR;

/// An in-memory store whose reads can be made slow, as S3's are at times.
#[derive(Debug, Default)]
struct SlowStore {
    inner: InMemory,
    slow: AtomicBool,
}

impl std::fmt::Display for SlowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowStore")
    }
}

#[async_trait::async_trait]
impl ObjectStore for SlowStore {
    async fn put_opts(&self, p: &Path, b: PutPayload, o: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(p, b, o).await
    }
    async fn put_multipart_opts(&self, p: &Path, o: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(p, o).await
    }
    async fn get_opts(&self, p: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        if self.slow.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        self.inner.get_opts(p, o).await
    }
    fn delete_stream(&self, l: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(l)
    }
    fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(p)
    }
    async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(p).await
    }
    async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(f, t, o).await
    }
}

async fn gateway(dir: &tempfile::TempDir, tune: impl FnOnce(&mut support::Settings)) -> (Gateway, Arc<Ingester>) {
    gateway_on(dir, Arc::new(InMemory::new()), tune).await
}

async fn gateway_on(
    dir: &tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    tune: impl FnOnce(&mut support::Settings),
) -> (Gateway, Arc<Ingester>) {
    let support::Stack { gw, ingester, .. } = support::stack(dir.path(), store, tune).await;
    support::create_g_m(&gw, 1, false).await;
    (gw, ingester)
}

fn points(n: i64, start: i64) -> Vec<DataPointValue> {
    (0..n)
        .map(|i| DataPointValue {
            timestamp: Some(ts(start + i)),
            tag_families: vec![TagFamilyForWrite { tags: vec![TagValue { value: Some(tag_value::Value::Int(Int { value: i % 7 })) }] }],
            fields: vec![FieldValue { value: Some(field_value::Value::Int(Int { value: i })) }],
            version: 0,
        })
        .collect()
}

fn write_req(points: Vec<DataPointValue>) -> WriteRequest {
    WriteRequest { metadata: Some(Metadata { group: "g".into(), name: "m".into(), mod_revision: 0 }), data_points: points, message_id: 0 }
}

fn query(begin: i64, offset: u32, limit: u32) -> QueryRequest {
    QueryRequest {
        groups: vec!["g".into()],
        name: "m".into(),
        time_range: Some(TimeRange { begin: Some(ts(begin)), end: Some(ts(begin + HOUR)) }),
        field_projection: Some(FieldProjection { names: vec!["v".into()] }),
        offset,
        limit,
        ..Default::default()
    }
}

#[tokio::test]
async fn query_limits_and_the_deadline_answer_with_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SlowStore::default());
    let (mut gw, ingester) = gateway_on(&dir, store.clone(), |_| {}).await;
    let start = now_nanos() - HOUR / 2;
    assert_eq!(gw.write(write_req(points(500, start))).await.status(), Status::Succeed);
    ingester.flush_all().await.unwrap();

    assert_eq!(gw.query(query(start - 1, 0, 0)).await.unwrap().data_points.len(), LIMIT_DEFAULT as usize, "limit 0 means the default");
    assert_eq!(gw.query(query(start - 1, 0, 450)).await.unwrap().data_points.len(), 450);
    assert_eq!(gw.query(query(start - 1, 480, 100)).await.unwrap().data_points.len(), 20, "offset skips rows");
    let err = gw.query(query(start - 1, 1, LIMIT_MAX)).await.unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.message.contains("limit") && err.message.contains(&LIMIT_MAX.to_string()), "{err:?}");

    // Reads of the parts now take 5 s; the deadline is 200 ms.
    store.slow.store(true, Ordering::Relaxed);
    gw.query_timeout = Duration::from_millis(200);
    let began = std::time::Instant::now();
    let err = gw.query(query(start - 1, 0, 10)).await.unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded, "{err:?}");
    assert!(began.elapsed() < Duration::from_secs(5), "the query was not cut off at its deadline");
}

#[tokio::test]
async fn too_many_points_in_one_write_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, ingester) = gateway(&dir, |_| {}).await;
    let r = gw.write(write_req(points(100_001, now_nanos() - HOUR / 2))).await;
    assert_eq!(r.status(), Status::InvalidArgument, "{r:?}");
    assert!(r.message.contains("data_points") && r.message.contains("100000"), "{r:?}");
    assert_eq!(ingester.memtable_bytes(), 0, "nothing of a refused request is stored");
    let r = gw.write(write_req(points(100_000, now_nanos() - HOUR / 2))).await;
    assert_eq!(r.status(), Status::Succeed, "{r:?}");
}

#[tokio::test]
async fn a_full_memory_budget_refuses_writes_until_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, ingester) = gateway(&dir, |s| s.ingester.memory_budget_bytes = 64 << 10).await;
    let start = now_nanos() - HOUR / 2;
    // Fill the budget; the write that finds it full is refused as overloaded.
    let mut written = 0;
    let refused = loop {
        let r = gw.write(write_req(points(200, start + written))).await;
        if r.status() != Status::Succeed {
            break r;
        }
        written += 200;
        assert!(written < 1_000_000, "the budget never filled");
    };
    assert_eq!(refused.status(), Status::ResourceExhausted, "{refused:?}");
    assert!(refused.message.contains("memtables"), "{refused:?}");
    // Refused because the write would not fit: memtables (no flusher runs
    // here) hold past the half where the flusher would have started.
    assert!(ingester.memtable_bytes() > 32 << 10 && ingester.memory_used() <= 64 << 10, "{}", ingester.memory_used());
    // A flush frees the budget: writes are accepted again.
    ingester.flush_all().await.unwrap();
    let r = gw.write(write_req(points(200, start + written))).await;
    assert_eq!(r.status(), Status::Succeed, "{r:?}");
}

#[tokio::test]
async fn a_shard_with_more_rows_than_a_query_may_hold_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, ingester) = gateway(&dir, |s| s.querier.rows_max = 300).await;
    let start = now_nanos() - HOUR / 2;
    assert_eq!(gw.write(write_req(points(250, start))).await.status(), Status::Succeed);
    ingester.flush_all().await.unwrap();
    assert_eq!(gw.query(query(start - 1, 0, 1000)).await.unwrap().data_points.len(), 250);
    assert_eq!(gw.write(write_req(points(250, start + 250))).await.status(), Status::Succeed);
    ingester.flush_all().await.unwrap();
    let err = gw.query(query(start - 1, 0, 1000)).await.unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err:?}");
    assert!(err.message.contains("300"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_refuses_writes_instead_of_queueing_without_bound() {
    // The WAL writer stalls 10 s on each batch (a stuck disk); the queue
    // holds one batch. Of three writes, one is in the writer, one in the
    // queue, and the third gives up after the 5 s enqueue wait.
    let dir = tempfile::tempdir().unwrap();
    let (gw, _ingester) = gateway(&dir, |s| {
        s.ingester.write_queue_depth = 1;
        s.ingester.stall_appends = Duration::from_secs(10);
    })
    .await;
    let start = now_nanos() - HOUR / 2;
    let writes: Vec<_> = (0..3)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.write(write_req(points(10, start + i * 100))).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for w in writes {
        statuses.push(w.await.unwrap());
    }
    let full: Vec<&WriteResponse> = statuses.iter().filter(|r| r.status() == Status::ResourceExhausted).collect();
    assert_eq!(full.len(), 1, "{statuses:?}");
    assert!(full[0].message.contains("write queue") && full[0].message.contains("full"), "{:?}", full[0]);
    assert_eq!(statuses.iter().filter(|r| r.status() == Status::Succeed).count(), 2, "{statuses:?}");
}
