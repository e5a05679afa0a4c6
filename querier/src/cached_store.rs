//! A read-through cache of part bytes in front of the object store: a
//! foyer `HybridCache` (memory, then local disk), so a repeated query pays
//! no GET and a restarted querier keeps what it read.
//!
//! Parts are immutable — a path is written once and never rewritten — so a
//! cached range never goes stale and nothing is ever invalidated. Entries
//! are keyed by the exact ranges the part reader asks for: a footer, a
//! batch's metadata, one column of one batch — units every later query
//! that needs them asks for again, whatever else it reads. Only range reads
//! of objects under `parts/` are cached; catalogs, listings, heads and
//! conditional reads go straight to the store. The missing ranges of a read
//! go to the store together, where nearby ones share a request
//! ([`canopy_storage::get_ranges_coalesced`]).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy, Source};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Bytes of the disk tier's blocks (its unit of writing and eviction); the
/// largest range it can hold.
const DISK_BLOCK_BYTES: usize = 16 << 20;

/// Write buffers of the disk tier (memory, on top of the memory tier).
const DISK_BUFFER_BYTES: usize = 32 << 20;

/// Ranges waiting to be written to the disk tier, at most. Past it foyer
/// drops the write (the range stays in memory and is fetched again after a
/// restart): a cold query fetching faster than the disk writes must not
/// queue without bound. Four times foyer's default, so one large cold
/// query's ranges all reach the disk.
const DISK_QUEUE_BYTES: usize = 128 << 20;

/// Where cached pages live and how much of each tier they may use.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes of pages held in memory.
    pub memory_bytes: usize,
    /// Directory of the disk tier; `None` keeps pages in memory only.
    pub dir: Option<PathBuf>,
    /// Bytes of pages the disk tier may hold.
    pub disk_bytes: usize,
}

impl Default for CacheConfig {
    /// Sized for a laptop: 256 MiB of memory, 2 GiB of disk when a
    /// directory is given.
    fn default() -> Self {
        CacheConfig { memory_bytes: 256 << 20, dir: None, disk_bytes: 2 << 30 }
    }
}

/// Cache lookups by outcome, served at `/metrics` as
/// `canopy_cache_hits_total{tier}` and `canopy_cache_misses_total` (ranges).
#[derive(Debug, Default)]
pub struct CacheCounters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    /// Ranges found in memory.
    pub fn memory_hits(&self) -> u64 {
        self.memory_hits.load(Ordering::Relaxed)
    }

    /// Ranges found on the local disk.
    pub fn disk_hits(&self) -> u64 {
        self.disk_hits.load(Ordering::Relaxed)
    }

    /// Ranges fetched from the object store.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// An [`ObjectStore`] that serves part range reads through a hybrid cache.
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    cache: HybridCache<String, Bytes>,
    counters: Arc<CacheCounters>,
    /// The disk tier's directory lock, held while the cache lives.
    _lock: Option<std::fs::File>,
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cached({})", self.inner)
    }
}

impl CachedStore {
    /// `inner` behind a cache as `cfg` says; the disk tier (if any) reopens
    /// what an earlier process left in `cfg.dir`.
    pub async fn open(inner: Arc<dyn ObjectStore>, cfg: &CacheConfig) -> std::io::Result<CachedStore> {
        let builder = HybridCacheBuilder::new()
            .with_name("canopy-parts")
            // Every range goes to disk as it is cached, not when memory
            // evicts it: a crash keeps the disk tier as warm as a clean stop.
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .memory(cfg.memory_bytes.max(1 << 20))
            .with_weighter(|k: &String, v: &Bytes| k.len() + v.len() + 64)
            .storage();
        let cache = match &cfg.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| std::io::Error::other(format!("cache dir {}: {e}", dir.display())))?;
                let lock = lock_dir(dir)?;
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(cfg.disk_bytes.max(4 * DISK_BLOCK_BYTES))
                    .build()
                    .map_err(|e| std::io::Error::other(format!("cache dir {}: {e}", dir.display())))?;
                let engine = BlockEngineConfig::new(device)
                    .with_block_size(DISK_BLOCK_BYTES)
                    .with_flushers(2)
                    .with_buffer_pool_size(DISK_BUFFER_BYTES)
                    .with_submit_queue_size_threshold(DISK_QUEUE_BYTES);
                let cache = builder.with_engine_config(engine).build().await;
                return cache
                    .map(|cache| CachedStore { inner, cache, counters: Arc::default(), _lock: Some(lock) })
                    .map_err(|e| std::io::Error::other(format!("part cache: {e}")));
            }
            None => builder.build().await,
        }
        .map_err(|e| std::io::Error::other(format!("part cache: {e}")))?;
        Ok(CachedStore { inner, cache, counters: Arc::default(), _lock: None })
    }

    /// The hit and miss counters.
    pub fn counters(&self) -> Arc<CacheCounters> {
        self.counters.clone()
    }

    /// Waits until ranges queued for the disk tier are written and closes
    /// it (a clean stop; a crash loses at most the ranges in flight).
    pub async fn close(&self) {
        if let Err(e) = self.cache.close().await {
            tracing::warn!(error = %e, "closing the part cache");
        }
    }

    /// The cache key of a range of a part.
    fn key(location: &Path, r: &Range<u64>) -> String {
        format!("{location}#{}-{}", r.start, r.end)
    }

    /// Serves `ranges` of `location` from the cache, fetching the missing
    /// ones from the store in one call (nearby ones share a request) and
    /// caching them.
    async fn read_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        let looked = futures::future::join_all(ranges.iter().map(|r| self.cache.get(&Self::key(location, r)))).await;
        let mut out: Vec<Option<Bytes>> = Vec::with_capacity(ranges.len());
        let mut missing: Vec<usize> = Vec::new();
        let mut from_disk = 0;
        for (i, found) in looked.into_iter().enumerate() {
            match found {
                Ok(Some(entry)) => {
                    if matches!(entry.source(), Source::Disk) {
                        from_disk += 1;
                    }
                    out.push(Some(entry.value().clone()));
                }
                Ok(None) => {
                    out.push(None);
                    missing.push(i);
                }
                Err(e) => {
                    // A damaged disk tier is a miss, never a failed query.
                    tracing::warn!(error = %e, "part cache read failed; reading the object store");
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        let hits = (ranges.len() - missing.len()) as u64;
        self.counters.memory_hits.fetch_add(hits - from_disk, Ordering::Relaxed);
        self.counters.disk_hits.fetch_add(from_disk, Ordering::Relaxed);
        canopy_storage::query_stats::record(canopy_storage::query_stats::QueryCost {
            memory_hits: hits - from_disk,
            disk_hits: from_disk,
            misses: missing.len() as u64,
            ..Default::default()
        });
        if !missing.is_empty() {
            self.counters.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
            let asked: Vec<Range<u64>> = missing.iter().map(|&i| ranges[i].clone()).collect();
            let fetched = self.inner.get_ranges(location, &asked).await?;
            for (&i, data) in missing.iter().zip(fetched) {
                // A short read is cached (the object ends there, for good);
                // an empty answer to a non-empty range is the store's
                // business, never an entry.
                let empty = data.is_empty() && ranges[i].start < ranges[i].end;
                if data.len() <= DISK_BLOCK_BYTES && !empty {
                    // A copy: `data` may be a slice of a larger coalesced
                    // read, which the entry would otherwise keep alive
                    // unweighed.
                    self.cache.insert(Self::key(location, &ranges[i]), Bytes::copy_from_slice(&data));
                }
                out[i] = Some(data);
            }
        }
        Ok(out.into_iter().map(|b| b.expect("every range found or fetched")).collect())
    }
}

/// Takes an exclusive lock on `dir/LOCK` for as long as the returned file
/// lives: two processes writing one disk tier would overwrite each other's
/// blocks (entries are checksummed, so nothing wrong is read, but the cache
/// would thrash).
fn lock_dir(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => Err(std::io::Error::other(format!(
            "cache dir {} is in use by another process; give each process its own --cache-dir",
            dir.display()
        ))),
    }
}

/// Whether a read may be served from the cache: a plain bounded range
/// of a part (immutable), no preconditions or versions.
fn cacheable(location: &Path, options: &GetOptions) -> Option<Range<u64>> {
    let plain = !options.head
        && options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none();
    match &options.range {
        Some(GetRange::Bounded(r)) if plain && canopy_storage::paths::is_part(location.as_ref()) => Some(r.clone()),
        _ => None,
    }
}

#[async_trait::async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let Some(range) = cacheable(location, &options).filter(|r| r.start < r.end) else {
            return self.inner.get_opts(location, options).await;
        };
        let data = self.read_ranges(location, std::slice::from_ref(&range)).await?.pop().expect("one range asked, one answered");
        // Only a range read's bytes are of use to callers; the object's size
        // is known only when the read came back short (it ended there).
        let size = if (data.len() as u64) < range.end - range.start { range.start + data.len() as u64 } else { range.end };
        let meta = ObjectMeta { location: location.clone(), last_modified: chrono::DateTime::UNIX_EPOCH, size, e_tag: None, version: None };
        let got = range.start..range.start + data.len() as u64;
        Ok(GetResult {
            payload: GetResultPayload::Stream(Box::pin(futures::stream::once(async move { Ok(data) }))),
            meta,
            range: got,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        if !canopy_storage::paths::is_part(location.as_ref()) {
            return self.inner.get_ranges(location, ranges).await;
        }
        self.read_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use rand::{Rng, SeedableRng};

    use super::*;

    const SIZE: u64 = 3 << 20;

    async fn backing() -> (Arc<dyn ObjectStore>, Arc<canopy_storage::StoreCounters>, Vec<u8>) {
        let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
        let (store, counters) = canopy_storage::CountingStore::wrap(Arc::new(object_store::memory::InMemory::new()));
        store.put(&"parts/g/p.arrow".into(), data.clone().into()).await.unwrap();
        store.put(&"catalog/g/1".into(), data.clone().into()).await.unwrap();
        (store, counters, data)
    }

    fn memory_only() -> CacheConfig {
        CacheConfig { memory_bytes: 64 << 20, dir: None, disk_bytes: 0 }
    }

    /// Any ranges read exactly what the store holds, cold and warm; asked
    /// again they cost no request; the missing ranges of one read share
    /// requests where they are near each other.
    #[tokio::test]
    async fn reads_answer_like_the_store_and_a_repeated_read_costs_no_request() {
        let seed = canopy_model::testing::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (store, counters, data) = backing().await;
        let cached = CachedStore::open(store, &memory_only()).await.unwrap();
        let part: Path = "parts/g/p.arrow".into();
        // Column-like ranges of one batch, a few KB apart: one request.
        let columns = [1_000..9_000, 12_000..20_000, 30_000..31_000];
        cached.get_ranges(&part, &columns).await.unwrap();
        assert_eq!(counters.requests("get"), 1, "nearby missing ranges share a request");
        for round in 0..50 {
            let ranges: Vec<Range<u64>> = (0..rng.random_range(1..6))
                .map(|_| {
                    let a = rng.random_range(0..SIZE);
                    a..(a + rng.random_range(1..200_000)).min(SIZE)
                })
                .collect();
            for pass in 0..2 {
                let before = counters.requests("get");
                let got = cached.get_ranges(&part, &ranges).await.unwrap();
                for (r, g) in ranges.iter().zip(&got) {
                    assert_eq!(&g[..], &data[r.start as usize..r.end as usize], "seed {seed} round {round}: {r:?}");
                }
                if pass == 1 {
                    assert_eq!(counters.requests("get"), before, "seed {seed} round {round}: a repeated read asks the store nothing");
                }
            }
        }
        let c = cached.counters();
        assert!(c.memory_hits() > 0 && c.disk_hits() == 0 && c.misses() > 0, "{c:?}");
        // A single range read (how footers are read) is cached the same way.
        let before = counters.requests("get");
        for _ in 0..2 {
            assert_eq!(&cached.get_range(&part, SIZE - 100..SIZE).await.unwrap()[..], &data[(SIZE - 100) as usize..]);
        }
        assert_eq!(counters.requests("get"), before + 1);
        // A read running past the end is clamped, as the store clamps it;
        // one starting past the end fails as the store's does.
        assert_eq!(&cached.get_range(&part, SIZE - 10..SIZE + 100).await.unwrap()[..], &data[(SIZE - 10) as usize..]);
        assert!(cached.get_range(&part, SIZE + 1..SIZE + 2).await.is_err());
        // What is not an immutable part is never cached.
        let cat: Path = "catalog/g/1".into();
        let before = counters.requests("get");
        for _ in 0..2 {
            cached.get_range(&cat, 0..100).await.unwrap();
        }
        assert_eq!(counters.requests("get"), before + 2);
    }

    /// The disk tier is still there after the process ends: a new cache on
    /// the same directory answers without a request.
    #[tokio::test]
    async fn the_disk_tier_serves_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig { memory_bytes: 8 << 20, dir: Some(dir.path().to_path_buf()), disk_bytes: 256 << 20 };
        let (store, counters, data) = backing().await;
        let part: Path = "parts/g/p.arrow".into();
        let ranges = [0..100_000, 500_000..600_000, SIZE - 4096..SIZE];
        {
            let cached = CachedStore::open(store.clone(), &cfg).await.unwrap();
            cached.get_ranges(&part, &ranges).await.unwrap();
            cached.close().await;
        }
        let gets = counters.requests("get");
        let cached = CachedStore::open(store, &cfg).await.unwrap();
        let got = cached.get_ranges(&part, &ranges).await.unwrap();
        for (r, g) in ranges.iter().zip(&got) {
            assert_eq!(&g[..], &data[r.start as usize..r.end as usize]);
        }
        assert_eq!(counters.requests("get"), gets, "the reopened cache read nothing from the store");
        let c = cached.counters();
        assert_eq!((c.disk_hits(), c.misses()), (3, 0), "{c:?}");
        // One disk tier, one process: a second cache on the directory is refused.
        let err = CachedStore::open(Arc::new(object_store::memory::InMemory::new()), &cfg).await.unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
    }
}
