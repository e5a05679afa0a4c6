//! One shard of one group: its WAL, memtables and current catalog version.
//!
//! Writes go through a bounded queue to a single writer task, which appends
//! every queued batch to the WAL with one fsync (group commit), inserts the
//! points into the active memtable in WAL order, then acknowledges.
//! The memtables and the catalog version are swapped together under one
//! lock, so a [`ShardSnapshot`] always pairs a catalog version with exactly
//! the points above its WAL watermark.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_model::{ColumnLayout, LayoutMapping, Point, QueryPlan};
use canopy_storage::{CatalogState, CatalogStore};
use object_store::ObjectStore;
use tokio::sync::{mpsc, oneshot};

use crate::budget::MemoryBudget;
use crate::flush_policy::ShardLoad;
use crate::last_values::LastValues;
use crate::memtable::{Chunk, Memtable, entry_bytes};
use crate::wal::{PAYLOAD_BYTES_MAX, Wal, WalBatch, decode_batch, split_to_fit};
use crate::{IngestError, Result};

/// Most bytes of WAL payload written under one fsync.
const GROUP_COMMIT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Segment width of a shard that has seen no write yet (never used for a
/// flush: an empty memtable is not flushed).
const DEFAULT_SEGMENT_NANOS: i64 = 86_400_000_000_000;
/// How long a write waits for room in a full shard queue before failing.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct WriteReq {
    batch: WalBatch,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64>>,
    /// The batch's share of the memory budget, held while it is queued
    /// (even if the writer stops waiting) and released once the memtable
    /// charges its points.
    charge: crate::budget::Charge,
}

/// Mutable state, guarded by a std mutex never held across an await.
#[derive(Debug)]
pub(crate) struct ShardState {
    pub(crate) active: Memtable,
    /// Frozen memtables waiting for their flush to commit, oldest first.
    pub(crate) frozen: Vec<Arc<Memtable>>,
    pub(crate) catalog: Arc<CatalogState>,
    /// Segment width of the group as last seen on a write.
    pub(crate) segment_nanos: i64,
    /// Each series' latest point, for `LAST` without a scan.
    pub(crate) last: LastValues,
}

impl ShardState {
    /// Adopts a newer catalog version (a commit, possibly rebased onto
    /// someone else's, or a refresh), telling the last-value cache about
    /// points it never saw that the version may bring.
    pub(crate) fn adopt_catalog(&mut self, catalog: CatalogState, wal_id: &str) {
        self.last.adopt(&self.catalog, &catalog, wal_id);
        self.catalog = Arc::new(catalog);
    }
}

/// What every shard of an ingester shares.
#[derive(Debug, Clone)]
pub(crate) struct ShardEnv {
    /// Names this ingester's WALs in catalog watermarks.
    pub(crate) wal_id: Arc<str>,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) queue_depth: usize,
    pub(crate) catalogs: CatalogStore,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) budget: Arc<MemoryBudget>,
    /// Flushes encoding parts at once, across shards (see `Shard::encoders`).
    pub(crate) encoders: Arc<tokio::sync::Semaphore>,
    /// See `IngesterConfig::crash_before_commit`.
    pub(crate) crash_before_commit: bool,
    /// See `IngesterConfig::stall_appends`.
    pub(crate) stall_appends: Duration,
    /// See `IngesterConfig::stall_uploads`.
    pub(crate) stall_uploads: Duration,
}

/// A shard.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) group: String,
    pub(crate) id: u32,
    pub(crate) epoch: u64,
    pub(crate) wal_id: Arc<str>,
    pub(crate) wal: Arc<Mutex<Wal>>,
    /// Open while this ingester owns the shard. Writes hold a read guard
    /// until acknowledged, so closing (the write guard) waits for them.
    gate: tokio::sync::RwLock<bool>,
    pub(crate) state: Mutex<ShardState>,
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// A flush started by the flusher runs now (it is not started twice).
    pub(crate) flushing: AtomicBool,
    /// Flushes started by the flusher that failed in a row (for backoff).
    pub(crate) flush_failures: AtomicU32,
    /// An append found the WAL volume full: flush now (it frees WAL space).
    pub(crate) wal_full: AtomicBool,
    pub(crate) catalogs: CatalogStore,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) budget: Arc<MemoryBudget>,
    /// Encoding a part is CPU-bound: flushes of several shards upload at
    /// once but encode a few at a time (half the cores), so ingest keeps
    /// the rest of the CPU.
    pub(crate) encoders: Arc<tokio::sync::Semaphore>,
    pub(crate) crash_before_commit: bool,
    pub(crate) stall_uploads: Duration,
    tx: mpsc::Sender<WriteReq>,
}

/// What a query sees of a shard: a catalog version plus the memtable points
/// above that version's WAL watermark, taken atomically.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub catalog: Arc<CatalogState>,
    /// Matching memtable points (already in the query's layout) with their
    /// WAL sequence numbers; all above the catalog's watermark of this WAL.
    pub rows: Vec<(u64, Point)>,
}

fn collect(
    chunk: &Chunk,
    target: &ColumnLayout,
    needed: Option<(&[bool], &[bool])>,
    keep: &(dyn Fn(&Point) -> bool + Sync),
    out: &mut Vec<(u64, Point)>,
) {
    let mapping = match needed {
        Some((tags, fields)) => {
            let mut m = LayoutMapping::new(&chunk.layout, target);
            m.restrict(tags, fields);
            Some(m)
        }
        None => (*chunk.layout != *target).then(|| LayoutMapping::new(&chunk.layout, target)),
    };
    let mut reader = chunk.reader(mapping);
    for row in 0..chunk.len() {
        let p = reader.point(row);
        if keep(&p) {
            out.push((chunk.seq(row), p));
        }
    }
}

impl Shard {
    /// Opens a shard: loads its catalog, recovers its WAL above the catalog's
    /// watermark into a memtable, and starts its writer task.
    pub(crate) async fn open(group: &str, id: u32, epoch: u64, wal_dir: std::path::PathBuf, env: ShardEnv) -> Result<Arc<Shard>> {
        let ShardEnv {
            wal_id,
            wal_segment_bytes: segment_bytes_max,
            queue_depth,
            catalogs,
            store,
            budget,
            encoders,
            crash_before_commit,
            stall_appends,
            stall_uploads,
        } = env;
        let catalog = catalogs.load_latest(group, id).await?;
        if catalog.epoch > epoch {
            return Err(canopy_storage::StorageError::Fenced { group: group.into(), shard: id, current: catalog.epoch, mine: epoch }.into());
        }
        let watermark = catalog.watermark(&wal_id);
        let (wal, recovered) = tokio::task::spawn_blocking(move || Wal::open(&wal_dir, watermark, segment_bytes_max))
            .await
            .map_err(|e| IngestError::Wal(std::io::Error::other(e)))??;
        let mut active = Memtable::default();
        let mut last = LastValues::new(&catalog);
        let mut segment_nanos = DEFAULT_SEGMENT_NANOS;
        for (seq, payload) in recovered.records {
            let b = decode_batch(&payload)
                .map_err(|e| IngestError::Wal(std::io::Error::other(format!("WAL record {seq} of {group}/{id}: {e}"))))?;
            segment_nanos = b.segment_nanos;
            last.offer(&b.measure, &b.layout, seq, &b.points);
            active.insert(&b.measure, b.revision, &b.layout, seq, b.points);
        }
        if active.bytes > 0 {
            tracing::info!(group, shard = id, bytes = active.bytes, max_seq = active.max_seq, "replayed WAL");
        }
        // Replayed points were acknowledged: charged whatever the budget says.
        budget.add_memtable(active.bytes);
        let (tx, rx) = mpsc::channel(queue_depth);
        let shard = Arc::new(Shard {
            group: group.into(),
            id,
            epoch,
            wal_id,
            wal: Arc::new(Mutex::new(wal)),
            gate: tokio::sync::RwLock::new(true),
            state: Mutex::new(ShardState { active, frozen: Vec::new(), catalog: Arc::new(catalog), segment_nanos, last }),
            flush_lock: tokio::sync::Mutex::new(()),
            flushing: AtomicBool::new(false),
            flush_failures: AtomicU32::new(0),
            wal_full: AtomicBool::new(false),
            catalogs,
            store,
            budget,
            encoders,
            crash_before_commit,
            stall_uploads,
            tx,
        });
        tokio::spawn(run_writer(Arc::downgrade(&shard), rx, stall_appends));
        Ok(shard)
    }

    /// Durably writes a batch of points of one measure (all of this shard);
    /// returns its WAL sequence number once fsync'd and visible to queries.
    /// `encoded` is the batch's WAL encoding when the caller already has it.
    pub(crate) async fn write(&self, batch: WalBatch, encoded: Option<Vec<u8>>) -> Result<u64> {
        let open = self.gate.read().await;
        if !*open {
            return Err(IngestError::NotOwner(format!("shard {}/{} was released", self.group, self.id)));
        }
        // Refused before any work if the budget is already full.
        drop(self.budget.reserve_write(0).map_err(IngestError::Overloaded)?);
        self.state.lock().expect("shard lock").segment_nanos = batch.segment_nanos;
        // Every record must fit what recovery accepts: an oversized batch
        // becomes several records, acknowledged together.
        let pieces = split_to_fit(batch, encoded, PAYLOAD_BYTES_MAX).map_err(IngestError::Invalid)?;
        // The points until the memtable holds them (and charges them
        // itself), and their encoding until the WAL has it.
        let costs: Vec<usize> = pieces.iter().map(|(b, payload)| b.points.iter().map(entry_bytes).sum::<usize>() + payload.len()).collect();
        // Refused whole or reserved whole, then shared out among the pieces.
        let mut queued = self.budget.reserve_write(costs.iter().sum()).map_err(IngestError::Overloaded)?;
        let mut replies = Vec::with_capacity(pieces.len());
        for ((batch, payload), cost) in pieces.into_iter().zip(costs) {
            let (reply, rx) = oneshot::channel();
            let charge = queued.split_off(cost);
            match tokio::time::timeout(ENQUEUE_TIMEOUT, self.tx.send(WriteReq { batch, payload, reply, charge })).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(IngestError::Closed),
                Err(_) => {
                    return Err(IngestError::Overloaded(format!("write queue of shard {}/{} is full", self.group, self.id)));
                }
            }
            replies.push(rx);
        }
        let mut seq = 0;
        for rx in replies {
            seq = rx.await.map_err(|_| IngestError::Closed)??;
        }
        Ok(seq)
    }

    /// Adopts a newer catalog version committed by someone else (a compactor)
    /// if it covers the same WAL watermark, so queries stop pinning versions
    /// whose removed parts the garbage collector will delete. A newer
    /// watermark would mean another writer flushed this shard: then the view
    /// is left alone and this writer's next commit is fenced or rebased.
    pub(crate) async fn refresh_catalog(&self) -> Result<bool> {
        // A shard being flushed is skipped (its commit brings a newer
        // version anyway): waiting for its upload would hold up the rest.
        let Ok(_serial) = self.flush_lock.try_lock() else { return Ok(false) };
        let latest = self.catalogs.load_latest(&self.group, self.id).await?;
        let mut st = self.state.lock().expect("shard lock");
        if latest.version > st.catalog.version && latest.watermark(&self.wal_id) == st.catalog.watermark(&self.wal_id) {
            st.adopt_catalog(latest, &self.wal_id);
            return Ok(true);
        }
        Ok(false)
    }

    /// Stops accepting writes (waiting for those in flight to be
    /// acknowledged), then flushes everything: after this the catalog holds
    /// every point the shard ever acknowledged.
    pub(crate) async fn close(&self) -> Result<()> {
        self.stop_writes().await;
        self.flush().await?;
        Ok(())
    }

    /// Refuses writes from now on, once those in flight are acknowledged.
    pub(crate) async fn stop_writes(&self) {
        *self.gate.write().await = false;
    }

    /// What the flush policy needs to know of this shard.
    pub(crate) fn load(&self) -> ShardLoad {
        let st = self.state.lock().expect("shard lock");
        ShardLoad {
            active_bytes: st.active.bytes,
            active_age: if st.active.is_empty() { Duration::ZERO } else { st.active.created.elapsed() },
            frozen: !st.frozen.is_empty() || self.wal_full.load(Ordering::Relaxed),
            flushing: self.flushing.load(Ordering::Relaxed),
        }
    }

    /// Refuses writes from now on and gives the memory budget back what the
    /// memtables hold (they go with the shard, unflushed: its WAL keeps the
    /// points). A flush running now releases what it commits; this waits
    /// for it, so every byte is released once.
    pub(crate) async fn discard(&self) {
        self.stop_writes().await;
        let _serial = self.flush_lock.lock().await;
        self.budget.release_memtable(self.memtable_bytes());
    }

    /// Bytes held by the active and frozen memtables.
    pub(crate) fn memtable_bytes(&self) -> usize {
        let st = self.state.lock().expect("shard lock");
        st.active.bytes + st.frozen.iter().map(|m| m.bytes).sum::<usize>()
    }

    /// Publishes a catalog version under this shard's epoch (if the latest
    /// carries an older one), so a previous owner can no longer commit.
    pub(crate) async fn fence(&self) -> Result<()> {
        let _serial = self.flush_lock.lock().await;
        let base = self.state.lock().expect("shard lock").catalog.clone();
        if base.epoch < self.epoch {
            let committed = self.commit(base, Vec::new(), 0).await?;
            self.state.lock().expect("shard lock").adopt_catalog(committed, &self.wal_id);
        }
        Ok(())
    }

    /// The answer of the last-value cache for `plan`, if it can give one.
    pub(crate) fn last_values(&self, plan: &QueryPlan) -> Option<canopy_model::PartialResult> {
        self.state.lock().expect("shard lock").last.answer(plan)
    }

    /// The catalog version and the matching memtable points above its watermark.
    pub(crate) fn snapshot(
        &self,
        measure: &str,
        target: &ColumnLayout,
        needed: Option<(&[bool], &[bool])>,
        keep: &(dyn Fn(&Point) -> bool + Sync),
    ) -> ShardSnapshot {
        // Under the lock: the catalog, the shared chunks and a copy of the
        // matching rows of one head (at most HEAD_ROWS_MAX); the rest is
        // read after releasing it.
        let (catalog, frozen, sealed, head_rows) = {
            let st = self.state.lock().expect("shard lock");
            let mut head_rows = Vec::new();
            let sealed = match st.active.measures.get(measure) {
                Some(t) => {
                    collect(t.head(), target, needed, keep, &mut head_rows);
                    t.sealed()
                }
                None => Vec::new(),
            };
            (st.catalog.clone(), st.frozen.clone(), sealed, head_rows)
        };
        // Rows go in write order, chunk by chunk: one WAL record that wrote a
        // (series, ts) twice at one version may have sealed a chunk between
        // the two, and readers keep the later copy (the last in this order).
        let mut rows = Vec::new();
        for m in &frozen {
            for chunk in m.measures.get(measure).into_iter().flat_map(|t| t.chunks()) {
                collect(chunk, target, needed, keep, &mut rows);
            }
        }
        for chunk in &sealed {
            collect(chunk, target, needed, keep, &mut rows);
        }
        rows.extend(head_rows);
        debug_assert!(rows.iter().all(|(s, _)| *s > catalog.watermark(&self.wal_id)), "snapshot holds only unflushed points");
        ShardSnapshot { catalog, rows }
    }
}

async fn run_writer(shard: std::sync::Weak<Shard>, mut rx: mpsc::Receiver<WriteReq>, stall: Duration) {
    while let Some(first) = rx.recv().await {
        if !stall.is_zero() {
            tokio::time::sleep(stall).await;
        }
        let mut reqs = vec![first];
        let mut bytes = reqs[0].payload.len();
        while bytes < GROUP_COMMIT_BYTES_MAX {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.payload.len();
                    reqs.push(r);
                }
                Err(_) => break,
            }
        }
        let Some(shard) = shard.upgrade() else { break };
        let payloads: Vec<Vec<u8>> = reqs.iter_mut().map(|r| std::mem::take(&mut r.payload)).collect();
        let wal = shard.wal.clone();
        let appended = tokio::task::spawn_blocking(move || wal.lock().expect("wal lock").append(&payloads))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match appended {
            Ok(seqs) => {
                let mut added = 0;
                let mut replies = Vec::with_capacity(reqs.len());
                let mut charges = Vec::with_capacity(reqs.len());
                {
                    let mut st = shard.state.lock().expect("shard lock");
                    for (r, seq) in reqs.into_iter().zip(seqs) {
                        let b = r.batch;
                        st.last.offer(&b.measure, &b.layout, seq, &b.points);
                        added += st.active.insert(&b.measure, b.revision, &b.layout, seq, b.points);
                        replies.push((r.reply, seq));
                        charges.push(r.charge);
                    }
                }
                // The memtable's charge replaces the queue's.
                shard.budget.add_memtable(added);
                drop(charges);
                for (reply, seq) in replies {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                // Nothing was appended (the log cut the partial record): a
                // retryable refusal, and a flush, which frees WAL space.
                tracing::warn!(group = %shard.group, shard = shard.id, error = %e, "WAL volume full; flushing to free it");
                shard.wal_full.store(true, Ordering::Relaxed);
                shard.budget.wal_volume_full();
                for r in reqs {
                    let _ = r.reply.send(Err(IngestError::Overloaded(format!(
                        "the WAL volume of shard {}/{} is full; writes resume once a flush frees it",
                        shard.group, shard.id
                    ))));
                }
            }
            Err(e) => {
                tracing::error!(group = %shard.group, shard = shard.id, error = %e, "WAL append failed");
                for r in reqs {
                    let _ = r.reply.send(Err(IngestError::Wal(std::io::Error::new(e.kind(), e.to_string()))));
                }
            }
        }
    }
}
