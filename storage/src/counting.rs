//! An object store that counts what it is asked for: requests and bytes per
//! operation. Object stores bill per request and per byte, so these are the
//! figures a query's cost is judged by (served at `/metrics`).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, UploadPart,
};

/// The operations counted, as labelled in metrics.
pub const STORE_OPS: [&str; 5] = ["get", "put", "list", "delete", "head"];

/// Requests and bytes per operation, in [`STORE_OPS`] order.
#[derive(Debug, Default)]
pub struct StoreCounters {
    requests: [AtomicU64; 5],
    bytes: [AtomicU64; 5],
}

impl StoreCounters {
    fn count(&self, op: usize, bytes: u64) {
        self.requests[op].fetch_add(1, Ordering::Relaxed);
        self.bytes[op].fetch_add(bytes, Ordering::Relaxed);
        crate::query_stats::record(crate::query_stats::QueryCost { requests: 1, bytes, ..Default::default() });
    }

    /// `(op, requests, bytes)` for every operation.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        STORE_OPS
            .iter()
            .enumerate()
            .map(|(i, op)| (*op, self.requests[i].load(Ordering::Relaxed), self.bytes[i].load(Ordering::Relaxed)))
            .collect()
    }

    /// Requests of one operation so far.
    pub fn requests(&self, op: &str) -> u64 {
        STORE_OPS.iter().position(|o| *o == op).map_or(0, |i| self.requests[i].load(Ordering::Relaxed))
    }

    /// Bytes of one operation so far.
    pub fn bytes(&self, op: &str) -> u64 {
        STORE_OPS.iter().position(|o| *o == op).map_or(0, |i| self.bytes[i].load(Ordering::Relaxed))
    }
}

const GET: usize = 0;
const PUT: usize = 1;
const LIST: usize = 2;
const DELETE: usize = 3;
const HEAD: usize = 4;

/// Wraps a store, counting into shared [`StoreCounters`].
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<StoreCounters>,
}

impl CountingStore {
    /// `inner`, counted; returns the store and its counters.
    pub fn wrap(inner: Arc<dyn ObjectStore>) -> (Arc<dyn ObjectStore>, Arc<StoreCounters>) {
        let counters = Arc::new(StoreCounters::default());
        (Arc::new(CountingStore { inner, counters: counters.clone() }), counters)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// A multipart upload whose parts count as puts.
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<StoreCounters>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.counters.count(PUT, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.counters.count(PUT, 0);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.counters.count(DELETE, 0);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        self.counters.count(PUT, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.counters.count(PUT, 0);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload { inner, counters: self.counters.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let head = options.head;
        let r = self.inner.get_opts(location, options).await;
        match &r {
            Ok(g) if head => self.counters.count(HEAD, g.range.end - g.range.start),
            Ok(g) => self.counters.count(GET, g.range.end - g.range.start),
            Err(_) => self.counters.count(if head { HEAD } else { GET }, 0),
        }
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        // Nearby ranges as one request, all at once, each request counted
        // (the inner store's own coalescing would hide what it is asked).
        crate::ranges::get_ranges_coalesced(self, location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
        let counters = self.counters.clone();
        self.inner.delete_stream(locations).inspect(move |_| counters.count(DELETE, 0)).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counters.count(LIST, 0);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counters.count(LIST, 0);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.counters.count(LIST, 0);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.counters.count(PUT, 0);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.counters.count(PUT, 0);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn requests_and_bytes_are_counted_per_operation() {
        let (store, c) = CountingStore::wrap(Arc::new(object_store::memory::InMemory::new()));
        store.put(&"a".into(), PutPayload::from(vec![7u8; 100])).await.unwrap();
        assert_eq!(store.get_range(&"a".into(), 10..30).await.unwrap().len(), 20);
        store.get_ranges(&"a".into(), &[0..5, 50..60]).await.unwrap(); // nearby: one request
        store.head(&"a".into()).await.unwrap();
        let _: Vec<_> = store.list(None).collect().await;
        store.delete(&"a".into()).await.unwrap();
        assert_eq!((c.requests("put"), c.bytes("put")), (1, 100));
        assert_eq!((c.requests("get"), c.bytes("get")), (2, 80));
        assert_eq!((c.requests("head"), c.requests("list"), c.requests("delete")), (1, 1, 1));
    }
}
