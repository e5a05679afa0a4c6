//! The ingester role: the set of shards this process owns, the flush loop
//! and shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use canopy_model::{ColumnLayout, IdMap, MeasureSchema, Point, QueryPlan, one_shard};
use canopy_storage::CatalogStore;
use object_store::ObjectStore;

use crate::budget::MemoryBudget;
use crate::flush_policy::{FlushLimits, retry_delay, shards_to_flush};
use crate::shard::{Shard, ShardEnv, ShardSnapshot};
use crate::wal::WalBatch;
use crate::{IngestError, Result};

/// Ingester settings.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// Local directory for WALs (`{data_dir}/wal/{group}/{shard}`); NVMe in production.
    pub data_dir: PathBuf,
    /// A shard's memtable is flushed when it holds this many bytes at the
    /// latest (bounds a part's size and a WAL's replay); the memory budget
    /// flushes the largest shards earlier.
    pub flush_bytes: usize,
    /// ... or when its oldest point is this old.
    pub flush_interval: Duration,
    /// Memory for ingest: queued write batches, memtables and in-flight
    /// flushes together. Past half of it the largest memtables are flushed;
    /// writes that would exceed it are refused as overloaded (429 /
    /// RESOURCE_EXHAUSTED) until flushes catch up.
    pub memory_budget_bytes: usize,
    /// Flushes running at once, at most (their uploads overlap).
    pub concurrent_flushes: usize,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// Write batches queued per shard before writers wait.
    pub write_queue_depth: usize,
    /// Standalone: a write to any shard opens it with this ownership epoch,
    /// and every shard with a WAL on disk is recovered at start. Cluster
    /// mode (`None`): only shards handed over by [`Ingester::acquire`] take writes.
    pub implicit_epoch: Option<u64>,
    /// Fault injection for tests: a flush stops right after uploading its
    /// parts, before the catalog commit — what a crash there leaves behind.
    #[doc(hidden)]
    pub crash_before_commit: bool,
    /// Fault injection for tests: the WAL writer waits this long after
    /// taking each batch, as behind a stalled disk (zero: no wait).
    #[doc(hidden)]
    pub stall_appends: Duration,
    /// Fault injection for tests: each flush waits this long before
    /// uploading its parts, as behind a slow object store (zero: no wait).
    #[doc(hidden)]
    pub stall_uploads: Duration,
}

impl IngesterConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> IngesterConfig {
        IngesterConfig {
            data_dir,
            flush_bytes: 16 << 20,
            flush_interval: Duration::from_secs(60),
            memory_budget_bytes: 2 << 30,
            concurrent_flushes: 4,
            wal_segment_bytes: 64 << 20,
            write_queue_depth: 1024,
            implicit_epoch: Some(1),
            crash_before_commit: false,
            stall_appends: Duration::ZERO,
            stall_uploads: Duration::ZERO,
        }
    }
}

/// The ingester.
#[derive(Debug)]
pub struct Ingester {
    cfg: IngesterConfig,
    catalogs: CatalogStore,
    store: Arc<dyn ObjectStore>,
    budget: Arc<MemoryBudget>,
    /// See `Shard::encoders`.
    encoders: Arc<tokio::sync::Semaphore>,
    /// Names this ingester's WALs in catalog watermarks; kept in the data
    /// directory so it survives restarts.
    wal_id: Arc<str>,
    shards: tokio::sync::Mutex<HashMap<(String, u32), Arc<Shard>>>,
    /// Held while a shard is acquired or released.
    changing: tokio::sync::Mutex<()>,
    /// Number of shards in `shards`, readable without the lock (metrics).
    held: AtomicUsize,
    /// Shard queries answered by last-value caches.
    last_value_hits: AtomicUsize,
}

/// Reads the WAL id from the data directory, creating it on first start.
/// A data directory that already has WALs but no id comes from a build
/// before WAL ids: its catalogs (format 1) count its records under
/// [`canopy_storage::LEGACY_WAL_ID`], so it keeps that id.
fn load_wal_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("wal_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::create_dir_all(data_dir)?;
    let has_wals = std::fs::read_dir(data_dir.join("wal")).is_ok_and(|mut d| d.next().is_some());
    let id = if has_wals {
        canopy_storage::LEGACY_WAL_ID.to_string()
    } else {
        format!("{:016x}{:08x}", canopy_model::now_nanos(), canopy_storage::paths::nonce())
    };
    let tmp = data_dir.join("wal_id.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, id.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(id)
}

impl Ingester {
    /// Opens the ingester. Standalone (`implicit_epoch`) recovers every
    /// shard that has a WAL on disk; in cluster mode a shard's WAL is
    /// replayed when the shard is acquired.
    pub async fn open(cfg: IngesterConfig, store: Arc<dyn ObjectStore>) -> Result<Arc<Ingester>> {
        let budget = Arc::new(MemoryBudget::new(cfg.memory_budget_bytes));
        let wal_id: Arc<str> = load_wal_id(&cfg.data_dir)?.into();
        let ing = Arc::new(Ingester {
            catalogs: CatalogStore::new(store.clone()),
            store,
            budget,
            encoders: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1))),
            wal_id,
            shards: tokio::sync::Mutex::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            held: AtomicUsize::new(0),
            last_value_hits: AtomicUsize::new(0),
            cfg,
        });
        std::fs::create_dir_all(ing.cfg.data_dir.join("wal"))?;
        if let Some(epoch) = ing.cfg.implicit_epoch {
            for (group, id) in ing.shards_on_disk()? {
                ing.acquire(&group, id, epoch).await?;
            }
        }
        Ok(ing)
    }

    /// This ingester's WAL id, as catalog watermarks name it.
    pub fn wal_id(&self) -> &str {
        &self.wal_id
    }

    /// The (group, shard) pairs that have a WAL directory here: shards this
    /// ingester owned before and may still hold unflushed points of.
    pub fn shards_on_disk(&self) -> Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        for group in std::fs::read_dir(self.cfg.data_dir.join("wal"))? {
            let group = group?;
            let Some(gname) = group.file_name().to_str().map(str::to_string) else {
                continue;
            };
            for shard in std::fs::read_dir(group.path())? {
                if let Some(id) = shard?.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    out.push((gname.clone(), id));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn wal_dir(&self, group: &str, id: u32) -> PathBuf {
        self.cfg.data_dir.join("wal").join(group).join(format!("{id:04}"))
    }

    /// Takes ownership of a shard under `epoch`: replays its WAL (points
    /// this ingester acknowledged before a crash), then publishes a catalog
    /// version carrying the epoch so the previous owner can no longer
    /// commit. Fails with `Fenced` if the catalog already has a newer epoch.
    pub async fn acquire(&self, group: &str, id: u32, epoch: u64) -> Result<()> {
        // The name becomes a directory: never let it resolve elsewhere.
        canopy_model::check_name(group, "group").map_err(|e| IngestError::Invalid(e.to_string()))?;
        // Opening replays the WAL and reads the catalog: serialize changes
        // of ownership, but keep the map free for writes to other shards.
        let _changing = self.changing.lock().await;
        let current = self.shards.lock().await.get(&(group.to_string(), id)).cloned();
        if let Some(s) = current {
            if s.epoch >= epoch {
                return Ok(());
            }
            // Re-acquired under a newer epoch (e.g. after an etcd hiccup):
            // hand the old incarnation's points to the catalog first.
            s.close().await?;
            let mut shards = self.shards.lock().await;
            shards.remove(&(group.to_string(), id));
            self.held.store(shards.len(), Ordering::Relaxed);
        }
        let env = ShardEnv {
            wal_id: self.wal_id.clone(),
            wal_segment_bytes: self.cfg.wal_segment_bytes,
            queue_depth: self.cfg.write_queue_depth,
            catalogs: self.catalogs.clone(),
            store: self.store.clone(),
            budget: self.budget.clone(),
            encoders: self.encoders.clone(),
            crash_before_commit: self.cfg.crash_before_commit,
            stall_appends: self.cfg.stall_appends,
            stall_uploads: self.cfg.stall_uploads,
        };
        let s = Shard::open(group, id, epoch, self.wal_dir(group, id), env).await?;
        if let Err(e) = s.fence().await {
            // Not taken: what its replay charged goes back.
            s.discard().await;
            return Err(e);
        }
        let mut shards = self.shards.lock().await;
        shards.insert((group.to_string(), id), s);
        self.held.store(shards.len(), Ordering::Relaxed);
        drop(shards);
        tracing::info!(group, shard = id, epoch, "acquired shard");
        Ok(())
    }

    /// Gives up a shard: stops taking writes for it (waiting for those in
    /// flight), flushes every acknowledged point into the catalog, then
    /// forgets it and removes its WAL. Until this returns, the next owner
    /// must not take over. A no-op for a shard not held here.
    pub async fn release(&self, group: &str, id: u32) -> Result<()> {
        let _changing = self.changing.lock().await;
        let Some(s) = self.shards.lock().await.get(&(group.to_string(), id)).cloned() else {
            return Ok(());
        };
        s.close().await?;
        {
            let mut shards = self.shards.lock().await;
            shards.remove(&(group.to_string(), id));
            self.held.store(shards.len(), Ordering::Relaxed);
        }
        drop(s);
        // Everything is in the catalog now; a later acquire numbers its WAL
        // after the catalog's watermark, so the old records are not needed.
        if let Err(e) = std::fs::remove_dir_all(self.wal_dir(group, id)) {
            tracing::warn!(group, shard = id, error = %e, "could not remove the WAL of a released shard");
        }
        tracing::info!(group, shard = id, "released shard");
        Ok(())
    }

    /// Drops a shard that another ingester took over (this one's epoch is
    /// stale): no flush, since its commits would be fenced anyway. Its WAL
    /// stays on disk, so the points come back if the shard is dealt here again.
    pub async fn forget(&self, group: &str, id: u32) {
        let _changing = self.changing.lock().await;
        let removed = {
            let mut shards = self.shards.lock().await;
            let s = shards.remove(&(group.to_string(), id));
            self.held.store(shards.len(), Ordering::Relaxed);
            s
        };
        let Some(s) = removed else {
            return;
        };
        s.discard().await;
        tracing::warn!(group, shard = id, epoch = s.epoch, "dropped a shard taken over by another ingester; its WAL is kept");
    }

    /// How many shards are held now.
    pub fn owned_count(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The shards held now, with their epochs.
    pub async fn owned(&self) -> Vec<(String, u32, u64)> {
        let mut v: Vec<_> = self.shards.lock().await.values().map(|s| (s.group.clone(), s.id, s.epoch)).collect();
        v.sort();
        v
    }

    async fn shard(&self, group: &str, id: u32) -> Result<Arc<Shard>> {
        if let Some(s) = self.shards.lock().await.get(&(group.to_string(), id)) {
            return Ok(s.clone());
        }
        match self.cfg.implicit_epoch {
            Some(epoch) => {
                self.acquire(group, id, epoch).await?;
                self.shards.lock().await.get(&(group.to_string(), id)).cloned().ok_or(IngestError::Closed)
            }
            None => Err(IngestError::NotOwner(format!("shard {group}/{id} is not owned by this ingester"))),
        }
    }

    /// Durably writes validated points (of any shards of one measure). Returns
    /// when every point is fsync'd in its shard's WAL and visible to queries.
    pub async fn write(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<()> {
        self.write_batch(WalBatch::for_schema(schema, points)).await
    }

    /// Writes a batch as [`Ingester::write`] does; the batch names the
    /// measure, its layout and revision (the form liaisons send it in).
    pub async fn write_batch(&self, batch: WalBatch) -> Result<()> {
        // One shard's points (as the gateway groups them) go as they are.
        if let Some(id) = one_shard(&batch.points) {
            self.shard(&batch.group, id).await?.write(batch, None).await?;
            return Ok(());
        }
        let WalBatch { group, measure, revision, segment_nanos, layout, points } = batch;
        // Shard ids are small integers: hashed as themselves (a point's
        // shard is looked up once per point).
        let mut by_shard: IdMap<u32, Vec<Point>> = IdMap::default();
        for p in points {
            by_shard.entry(p.shard).or_default().push(p);
        }
        let mut pending = Vec::with_capacity(by_shard.len());
        for (id, pts) in by_shard {
            let shard = self.shard(&group, id).await?;
            let b =
                WalBatch { group: group.clone(), measure: measure.clone(), revision, segment_nanos, layout: layout.clone(), points: pts };
            pending.push(async move { shard.write(b, None).await });
        }
        for r in futures::future::join_all(pending).await {
            r?;
        }
        Ok(())
    }

    /// Writes a WAL-encoded batch as liaisons send it; returns its point
    /// count. A batch of one shard goes to the WAL as received, without
    /// being encoded again.
    pub async fn write_encoded(&self, payload: Vec<u8>) -> Result<usize> {
        let batch = crate::wal::decode_batch(&payload).map_err(|e| IngestError::Invalid(format!("batch: {e}")))?;
        let n = batch.points.len();
        match one_shard(&batch.points) {
            Some(id) => {
                self.shard(&batch.group, id).await?.write(batch, Some(payload)).await?;
            }
            _ => self.write_batch(batch).await?,
        }
        Ok(n)
    }

    /// A consistent view of one shard for a query (see [`ShardSnapshot`]):
    /// memtable points of `measure` in the `target` layout that `keep`
    /// accepts, copying only the `needed` (tags, fields) columns if given.
    pub async fn snapshot(
        &self,
        group: &str,
        shard: u32,
        measure: &str,
        target: &ColumnLayout,
        needed: Option<(&[bool], &[bool])>,
        keep: &(dyn Fn(&Point) -> bool + Sync),
    ) -> Result<ShardSnapshot> {
        Ok(self.shard(group, shard).await?.snapshot(measure, target, needed, keep))
    }

    /// The snapshot a query needs of one shard: the plan's measure, only the
    /// points its sources may keep, only the columns it reads.
    pub async fn snapshot_for(&self, plan: &QueryPlan, shard: u32) -> Result<ShardSnapshot> {
        let schema = &plan.schema;
        let (tags, fields) = plan.needed_columns();
        self.snapshot(&schema.group.name, shard, &schema.name, &schema.layout, Some((&tags, &fields)), &|p| plan.source_filter(p)).await
    }

    /// One shard's partial result for `plan` from its last-value cache, when
    /// the plan is a `LAST` the cache can answer completely (see
    /// `last_values.rs`); `None` means the query must scan.
    pub async fn last_values(&self, plan: &QueryPlan, shard: u32) -> Result<Option<canopy_model::PartialResult>> {
        let answer = self.shard(&plan.schema.group.name, shard).await?.last_values(plan);
        if answer.is_some() {
            self.last_value_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// Shard queries answered by last-value caches so far.
    pub fn last_value_hits(&self) -> usize {
        self.last_value_hits.load(Ordering::Relaxed)
    }

    /// Flushes every shard; returns the number of parts committed.
    pub async fn flush_all(&self) -> Result<usize> {
        let shards: Vec<Arc<Shard>> = self.shards.lock().await.values().cloned().collect();
        let mut parts = 0;
        for s in shards {
            parts += s.flush().await?;
        }
        Ok(parts)
    }

    /// Re-reads every shard's catalog and adopts versions committed by others
    /// (see `Shard::refresh_catalog`); returns how many shards changed.
    pub async fn refresh_catalogs(&self) -> Result<usize> {
        let shards: Vec<Arc<Shard>> = self.shards.lock().await.values().cloned().collect();
        let mut changed = 0;
        for s in shards {
            changed += s.refresh_catalog().await? as usize;
        }
        Ok(changed)
    }

    /// Memtable bytes held across shards.
    pub fn memtable_bytes(&self) -> usize {
        self.budget.memtables()
    }

    /// Bytes charged against the memory budget: queued writes, memtables
    /// and in-flight flushes.
    pub fn memory_used(&self) -> usize {
        self.budget.used()
    }

    /// The memory budget.
    pub fn memory_budget(&self) -> usize {
        self.budget.max()
    }

    /// Runs the flush policy (`flush_policy.rs`: size, age, then the memory
    /// budget, largest shards first) until the process ends. Flushes run as
    /// their own tasks, a few at once, so one slow upload holds up no other
    /// shard; the policy runs every 500 ms, and at once when memtables cross
    /// the budget's flush threshold or a flush ends.
    pub fn spawn_flusher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ing = Arc::downgrade(self);
        let budget = self.budget.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrent_flushes.max(1)));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut refreshed = std::time::Instant::now();
            let refreshing = Arc::new(std::sync::atomic::AtomicBool::new(false));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = budget.pressure.notified() => {}
                }
                let Some(ing) = ing.upgrade() else { break };
                // Every 5 s pick up catalog versions a compactor committed, in
                // a task of its own: a slow store must not hold up flushes.
                if refreshed.elapsed() >= Duration::from_secs(5) && !refreshing.swap(true, Ordering::Relaxed) {
                    refreshed = std::time::Instant::now();
                    let (ing, refreshing) = (ing.clone(), refreshing.clone());
                    tokio::spawn(async move {
                        if let Err(e) = ing.refresh_catalogs().await {
                            tracing::warn!(error = %e, "catalog refresh failed; will retry");
                        }
                        refreshing.store(false, Ordering::Relaxed);
                    });
                }
                let shards: Vec<Arc<Shard>> = ing.shards.lock().await.values().cloned().collect();
                let loads: Vec<_> = shards.iter().map(|s| s.load()).collect();
                let limits = FlushLimits {
                    shard_bytes: ing.cfg.flush_bytes,
                    interval: ing.cfg.flush_interval,
                    memtables: budget.memtables(),
                    threshold: budget.flush_threshold(),
                    wal_volume_full: budget.take_wal_volume_full(),
                };
                for i in shards_to_flush(&loads, limits) {
                    let Ok(slot) = slots.clone().try_acquire_owned() else { break };
                    let s = shards[i].clone();
                    s.flushing.store(true, Ordering::Relaxed);
                    let budget = budget.clone();
                    tokio::spawn(async move {
                        // Cleared however this task ends (a panic included),
                        // or the policy would never pick the shard again.
                        let _done = FlushDone { shard: s.clone(), budget };
                        let result = s.flush().await;
                        // The slot goes back before any backoff: other shards flush meanwhile.
                        drop(slot);
                        match result {
                            Ok(_) => s.flush_failures.store(0, Ordering::Relaxed),
                            Err(e) => {
                                let failures = s.flush_failures.fetch_add(1, Ordering::Relaxed) + 1;
                                let wait = retry_delay(failures, canopy_storage::paths::nonce());
                                tracing::warn!(group = %s.group, shard = s.id, error = %e, failures, retry_in = ?wait, "flush failed; will retry");
                                // Still marked as flushing: the policy leaves it alone meanwhile.
                                tokio::time::sleep(wait).await;
                            }
                        }
                    });
                }
            }
        })
    }
}

/// Marks a shard's flush task as ended when dropped, and wakes the flusher
/// (memory or a slot was freed).
struct FlushDone {
    shard: Arc<Shard>,
    budget: Arc<MemoryBudget>,
}

impl Drop for FlushDone {
    fn drop(&mut self) {
        self.shard.flushing.store(false, Ordering::Relaxed);
        self.budget.pressure.notify_one();
    }
}
