//! The versioned catalog of one (group, shard): which parts are live, which
//! WAL position they cover, and which ownership epoch wrote them.
//!
//! Each version is an immutable object `catalog/{group}/{shard}/v{N}.cat`
//! written with create-if-absent (S3 `If-None-Match: *`), so exactly one
//! writer can publish version N: a commit is a compare-and-swap on the
//! version number. Readers find the newest version from the `_latest` hint
//! and probe forward with HEAD until a version is missing; parts are never
//! discovered by listing.
//!
//! On-disk form and its versions: [`crate::catalog_format`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::{Result, StorageError};

/// Most versions probed forward from the hint before giving up; bounds the
/// loop if the hint is far behind (it is rewritten on every commit).
const PROBE_MAX: u64 = 100_000;

/// Per-measure statistics of a part, enough to skip it without reading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MeasureStats {
    pub rows: u64,
    pub series: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Entries written before 2026-12: per numeric field, (min, max) over
    /// its non-null values. Nothing read them, and on real Prometheus data
    /// they were a sixth of a catalog; new entries leave the map empty but
    /// keep the key, which earlier builds require.
    #[serde(default)]
    pub fields: BTreeMap<String, (f64, f64)>,
    /// Entries written before `keys`: a Bloom filter of the series ids, for
    /// parts with few series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_filter: Option<crate::SeriesFilter>,
    /// Entries written before `keys`: per tag with at most
    /// `FILTER_SERIES_MAX` distinct values in the part, a Bloom filter of
    /// their [`crate::tag_value_hash`]es. Older entries still lack it (no
    /// pruning then).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_filters: BTreeMap<String, crate::SeriesFilter>,
    /// One Bloom filter of the measure's series ids (unless
    /// `keys_without_series`) and of every tag's values under
    /// [`crate::tag_key_hash`], except the tags in `keys_unfiltered` and those
    /// that name their series (each value v held by exactly the series
    /// `series_id(measure, [v])`, found through the series ids instead).
    /// One filter instead of a filter per tag: a measure of a few series
    /// had a 64-bit word per tag for ~10 bits each, which made the filters
    /// half of a catalog on real Prometheus data. Absent in older entries
    /// (`series_filter` and `tag_filters` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<crate::KeyFilter>,
    /// The part has more than `FILTER_SERIES_MAX` series of the measure:
    /// `keys` holds none of them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keys_without_series: bool,
    /// Tags whose values `keys` does not hold (more than
    /// `FILTER_SERIES_MAX` in the part): criteria on them prune nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_unfiltered: Vec<String>,
}

impl MeasureStats {
    /// False if the part certainly holds no series in `ids`.
    pub fn may_hold_series(&self, ids: &[u64]) -> bool {
        match (&self.keys, &self.series_filter) {
            (Some(keys), _) => self.keys_without_series || ids.iter().any(|&id| keys.may_contain(id)),
            (None, Some(f)) => ids.iter().any(|&id| f.may_contain(id)),
            (None, None) => true,
        }
    }

    /// False if no series of `measure` in the part certainly has one of
    /// `values` for `tag`.
    pub fn may_hold_tag(&self, measure: &str, tag: &str, values: &[canopy_model::TagVal]) -> bool {
        self.may_hold(&TagProbe::new(measure, tag, values))
    }

    /// [`MeasureStats::may_hold_tag`] with the hashes computed once, for a
    /// query that checks many parts.
    pub fn may_hold(&self, probe: &TagProbe) -> bool {
        let Some(keys) = &self.keys else {
            return self.tag_filters.get(&probe.tag).is_none_or(|f| probe.values.iter().any(|v| f.may_contain(v.legacy)));
        };
        if self.keys_unfiltered.contains(&probe.tag) {
            return true;
        }
        // A tag that names its series has no keys of its own: the series
        // its value names stands for it.
        probe.values.iter().any(|v| keys.may_contain(v.key) || (!self.keys_without_series && keys.may_contain(v.series)))
    }
}

/// A condition `tag IN values` on a measure, hashed as catalog filters
/// hold it (see [`MeasureStats::may_hold`]).
#[derive(Debug, Clone)]
pub struct TagProbe {
    tag: String,
    values: Vec<ValueHashes>,
}

#[derive(Debug, Clone)]
struct ValueHashes {
    /// [`crate::tag_key_hash`]: the value in a `keys` filter.
    key: u64,
    /// The series the value names, for a tag that names its series.
    series: u64,
    /// [`crate::tag_value_hash`]: the value in a `tag_filters` filter.
    legacy: u64,
}

impl TagProbe {
    /// Hashes `values` of `tag` of `measure`.
    pub fn new(measure: &str, tag: &str, values: &[canopy_model::TagVal]) -> TagProbe {
        let values = values
            .iter()
            .map(|v| ValueHashes {
                key: crate::tag_key_hash(tag, v),
                series: canopy_model::series_id(measure, [v]),
                legacy: crate::tag_value_hash(v),
            })
            .collect();
        TagProbe { tag: tag.to_string(), values }
    }
}

/// A part as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartMeta {
    pub id: u64,
    /// Object key relative to the store root.
    pub path: String,
    pub segment_start: i64,
    pub segment_end: i64,
    /// Object size; with `footer_bytes` lets a reader fetch the footer in one range read.
    pub bytes: u64,
    pub footer_bytes: u64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Highest WAL sequence number whose points the part holds.
    pub max_wal_seq: u64,
    /// 0 for flushed parts; raised by compaction.
    pub level: u32,
    pub measures: BTreeMap<String, MeasureStats>,
}

impl PartMeta {
    /// A catalog entry for a written part.
    pub fn new(
        id: u64,
        path: String,
        segment_start: i64,
        segment_end: i64,
        max_wal_seq: u64,
        level: u32,
        s: crate::part::PartSummary,
    ) -> PartMeta {
        PartMeta {
            id,
            path,
            segment_start,
            segment_end,
            bytes: s.bytes,
            footer_bytes: s.footer_bytes,
            rows: s.rows,
            min_ts: s.min_ts,
            max_ts: s.max_ts,
            max_wal_seq,
            level,
            measures: s.measures,
        }
    }
}

/// One version of a shard's catalog (in memory; stored as
/// [`crate::catalog_format`] describes).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogState {
    pub group: String,
    pub shard: u32,
    /// 0 means "nothing committed yet"; the first commit writes version 1.
    pub version: u64,
    /// Ownership epoch of the writer of this version.
    pub epoch: u64,
    /// Per WAL (keyed by the writer's WAL id): every record of that WAL
    /// with a sequence number <= the watermark is in `parts`. A shard that
    /// changed owners holds one entry per owner, since each ingester numbers
    /// its own WAL.
    pub watermarks: BTreeMap<String, u64>,
    pub next_part_id: u64,
    /// Live parts, in commit order (later parts win ties on dedup).
    pub parts: Vec<PartMeta>,
    /// Segments a compactor is working on, so others leave them alone.
    pub claims: Vec<CompactionClaim>,
    /// Objects no longer referenced, to be deleted once no query can still
    /// read them (see the GC grace period).
    pub pending_deletes: Vec<PendingDelete>,
    /// Unique per commit attempt, so a writer whose create-if-absent put
    /// succeeded but whose reply was lost (and was retried into a 412)
    /// recognises the version as its own.
    pub commit_id: String,
}

/// A compactor's claim on one time segment of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionClaim {
    pub segment_start: i64,
    pub holder: String,
    /// Unix milliseconds after which the claim is void.
    pub expires_at_ms: i64,
}

/// An object removed from the catalog, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelete {
    pub path: String,
    /// Unix milliseconds of the commit that removed it.
    pub removed_at_ms: i64,
}

impl CatalogState {
    /// The state before the first commit.
    pub fn empty(group: &str, shard: u32) -> CatalogState {
        CatalogState {
            group: group.into(),
            shard,
            version: 0,
            epoch: 0,
            watermarks: BTreeMap::new(),
            next_part_id: 1,
            parts: Vec::new(),
            claims: Vec::new(),
            pending_deletes: Vec::new(),
            commit_id: String::new(),
        }
    }

    /// The watermark of one WAL: records at or below it are in `parts`.
    pub fn watermark(&self, wal_id: &str) -> u64 {
        self.watermarks.get(wal_id).copied().unwrap_or(0)
    }

    fn encode(&self) -> Vec<u8> {
        crate::catalog_format::encode(self)
    }

    fn decode(path: &str, b: &[u8]) -> Result<CatalogState> {
        crate::catalog_format::decode(b).map_err(|e| StorageError::Corrupt { path: path.into(), reason: e.to_string() })
    }
}

/// Reads and commits catalog versions in an object store.
#[derive(Debug, Clone)]
pub struct CatalogStore {
    store: Arc<dyn ObjectStore>,
}

impl CatalogStore {
    /// A catalog store over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> CatalogStore {
        CatalogStore { store }
    }

    /// The object store underneath.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Loads the newest committed version, or the empty state.
    pub async fn load_latest(&self, group: &str, shard: u32) -> Result<CatalogState> {
        let hint = match self.store.get(&paths::catalog_hint(group, shard)).await {
            Ok(r) => String::from_utf8_lossy(&r.bytes().await?).trim().parse::<u64>().ok(),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut latest = None;
        let mut v = hint.unwrap_or(1).max(1);
        if hint.is_none() || !self.exists(group, shard, v).await? {
            // The hint names a version that was garbage-collected (it can
            // only lag): start from the newest version the listing shows.
            v = self.list_versions(group, shard).await?.into_iter().max().unwrap_or(1);
        }
        for _ in 0..PROBE_MAX {
            match self.load_version(group, shard, v).await {
                Ok(state) => {
                    latest = Some(state);
                    v += 1;
                }
                Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(latest.unwrap_or_else(|| CatalogState::empty(group, shard)))
    }

    async fn exists(&self, group: &str, shard: u32, version: u64) -> Result<bool> {
        match self.store.head(&paths::catalog_version(group, shard, version)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Version numbers present in the store (a listing: for garbage
    /// collection and as a fallback, never to find parts).
    pub async fn list_versions(&self, group: &str, shard: u32) -> Result<Vec<u64>> {
        use futures::TryStreamExt;
        let metas: Vec<object_store::ObjectMeta> = self.store.list(Some(&paths::catalog_dir(group, shard))).try_collect().await?;
        Ok(metas.iter().filter_map(|m| m.location.filename().and_then(paths::parse_catalog_version)).collect())
    }

    /// Deletes one old version (garbage collection).
    pub async fn delete_version(&self, group: &str, shard: u32, version: u64) -> Result<()> {
        match self.store.delete(&paths::catalog_version(group, shard, version)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads one version.
    pub async fn load_version(&self, group: &str, shard: u32, version: u64) -> Result<CatalogState> {
        let path = paths::catalog_version(group, shard, version);
        let bytes = self.store.get(&path).await?.bytes().await?;
        CatalogState::decode(path.as_ref(), &bytes)
    }

    /// Publishes `next` as version `prev.version + 1`. Fails with
    /// [`StorageError::CatalogConflict`] if that version exists (someone else
    /// committed first) and with [`StorageError::Fenced`] if `prev` was
    /// written under a newer epoch than `next` claims.
    pub async fn commit(&self, prev: &CatalogState, mut next: CatalogState) -> Result<CatalogState> {
        if prev.epoch > next.epoch {
            return Err(StorageError::Fenced { group: prev.group.clone(), shard: prev.shard, current: prev.epoch, mine: next.epoch });
        }
        debug_assert!(prev.watermarks.iter().all(|(w, m)| next.watermark(w) >= *m), "watermarks never move back");
        next.version = prev.version + 1;
        next.commit_id = format!("{:016x}{:08x}", canopy_model::now_nanos(), paths::nonce());
        let path = paths::catalog_version(&next.group, next.shard, next.version);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(Bytes::from(next.encode())), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                // The client may have retried a put that had succeeded: then
                // the version there is this very commit.
                if self.load_version(&next.group, next.shard, next.version).await.is_ok_and(|v| v.commit_id == next.commit_id) {
                    tracing::info!(group = %next.group, shard = next.shard, version = next.version, "commit was retried after it succeeded");
                } else {
                    return Err(StorageError::CatalogConflict { group: next.group.clone(), shard: next.shard, version: next.version });
                }
            }
            Err(e) => return Err(e.into()),
        }
        // The hint is only a starting point for probing; a stale hint costs a
        // few HEADs, never correctness, so a failed update is just logged.
        let hint = PutPayload::from(Bytes::from(next.version.to_string()));
        if let Err(e) = self.store.put(&paths::catalog_hint(&next.group, next.shard), hint).await {
            tracing::warn!(error = %e, "catalog hint update failed");
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn store() -> CatalogStore {
        CatalogStore::new(Arc::new(InMemory::new()))
    }

    #[tokio::test]
    async fn commits_are_versioned_and_loadable() {
        let cs = store();
        let v0 = cs.load_latest("g", 0).await.unwrap();
        assert_eq!(v0.version, 0);
        let mut next = v0.clone();
        next.watermarks.insert("w".into(), 7);
        let v1 = cs.commit(&v0, next).await.unwrap();
        assert_eq!(v1.version, 1);
        let v2 = cs.commit(&v1, v1.clone()).await.unwrap();
        assert_eq!(cs.load_latest("g", 0).await.unwrap(), v2);
        assert_eq!(cs.load_version("g", 0, 1).await.unwrap().watermark("w"), 7);
    }

    #[tokio::test]
    async fn a_second_commit_on_the_same_base_conflicts() {
        let cs = store();
        let v0 = CatalogState::empty("g", 1);
        cs.commit(&v0, v0.clone()).await.unwrap();
        let err = cs.commit(&v0, v0.clone()).await.unwrap_err();
        assert!(matches!(err, StorageError::CatalogConflict { version: 1, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_writer_with_an_old_epoch_is_fenced() {
        let cs = store();
        let mut taken = CatalogState::empty("g", 2);
        taken.epoch = 5;
        let v1 = cs.commit(&CatalogState::empty("g", 2), taken).await.unwrap();
        let mut stale = v1.clone();
        stale.epoch = 4;
        assert!(matches!(cs.commit(&v1, stale).await.unwrap_err(), StorageError::Fenced { current: 5, mine: 4, .. }));
    }

    #[tokio::test]
    async fn probing_finds_versions_beyond_a_stale_hint() {
        let cs = store();
        let mut s = CatalogState::empty("g", 3);
        for _ in 0..3 {
            s = cs.commit(&s, s.clone()).await.unwrap();
        }
        cs.store.put(&paths::catalog_hint("g", 3), PutPayload::from("1")).await.unwrap();
        assert_eq!(cs.load_latest("g", 3).await.unwrap().version, 3);
    }

    #[tokio::test]
    async fn a_hint_to_a_collected_version_falls_back_to_listing() {
        let cs = store();
        let mut s = CatalogState::empty("g", 4);
        for _ in 0..5 {
            s = cs.commit(&s, s.clone()).await.unwrap();
        }
        cs.store.put(&paths::catalog_hint("g", 4), PutPayload::from("2")).await.unwrap();
        for v in 1..=3 {
            cs.delete_version("g", 4, v).await.unwrap();
        }
        assert_eq!(cs.load_latest("g", 4).await.unwrap().version, 5);
        let mut listed = cs.list_versions("g", 4).await.unwrap();
        listed.sort();
        assert_eq!(listed, vec![4, 5]);
    }

    /// A store whose next create-if-absent put is applied but answered with
    /// a precondition failure, as when an S3 client retries a put whose
    /// first attempt succeeded.
    #[derive(Debug)]
    struct LostReply {
        inner: InMemory,
        armed: std::sync::atomic::AtomicBool,
    }

    impl std::fmt::Display for LostReply {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LostReply")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for LostReply {
        async fn put_opts(
            &self,
            p: &object_store::path::Path,
            b: PutPayload,
            o: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            let create = matches!(o.mode, PutMode::Create);
            let r = self.inner.put_opts(p, b, o).await?;
            if create && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(object_store::Error::Precondition { path: p.to_string(), source: "retried put".into() });
            }
            Ok(r)
        }
        async fn put_multipart_opts(
            &self,
            p: &object_store::path::Path,
            o: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(
            &self,
            p: &object_store::path::Path,
            o: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(p, o).await
        }
        fn delete_stream(
            &self,
            l: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.inner.delete_stream(l)
        }
        fn list(
            &self,
            p: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&object_store::path::Path>) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(
            &self,
            f: &object_store::path::Path,
            t: &object_store::path::Path,
            o: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    #[tokio::test]
    async fn a_commit_whose_reply_was_lost_is_recognised_as_its_own() {
        let store = Arc::new(LostReply { inner: InMemory::new(), armed: std::sync::atomic::AtomicBool::new(false) });
        let cs = CatalogStore::new(store.clone());
        let v1 = cs.commit(&CatalogState::empty("g", 5), CatalogState::empty("g", 5)).await.unwrap();
        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut next = v1.clone();
        next.watermarks.insert("w".into(), 9);
        let v2 = cs.commit(&v1, next).await.expect("the version written is this commit");
        assert!(!store.armed.load(std::sync::atomic::Ordering::SeqCst), "the put whose reply was lost happened");
        assert_eq!(v2.version, 2);
        assert_eq!(cs.load_latest("g", 5).await.unwrap(), v2);
        // Someone else's version at the same number (another commit id) is
        // still a conflict, and stays as it was.
        assert!(matches!(cs.commit(&v1, v1.clone()).await, Err(StorageError::CatalogConflict { version: 2, .. })));
        assert_eq!(cs.load_latest("g", 5).await.unwrap(), v2);
    }

    #[test]
    fn corruption_is_detected() {
        let mut b = CatalogState::empty("g", 0).encode();
        let n = b.len();
        b[n - 2] ^= 1;
        assert!(matches!(CatalogState::decode("p", &b), Err(StorageError::Corrupt { .. })));
    }
}
