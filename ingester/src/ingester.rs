//! The ingester role: the set of shards this process owns, the flush loop
//! and shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use canopy_model::{ColumnLayout, MeasureSchema, Point};
use canopy_storage::CatalogStore;
use object_store::ObjectStore;

use crate::Result;
use crate::shard::{MemoryBudget, Shard, ShardEnv, ShardSnapshot};

/// Ingester settings.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// Local directory for WALs (`{data_dir}/wal/{group}/{shard}`); NVMe in production.
    pub data_dir: PathBuf,
    /// A shard's memtable is flushed when it holds this many bytes.
    pub flush_bytes: usize,
    /// ... or when its oldest point is this old.
    pub flush_interval: Duration,
    /// All memtables together may hold this many bytes; writes beyond are
    /// rejected as overloaded until flushes catch up.
    pub memtable_bytes_max: usize,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// Write batches queued per shard before writers wait.
    pub write_queue_depth: usize,
    /// Ownership epoch this process writes with.
    pub epoch: u64,
}

impl IngesterConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> IngesterConfig {
        IngesterConfig {
            data_dir,
            flush_bytes: 64 << 20,
            flush_interval: Duration::from_secs(60),
            memtable_bytes_max: 2 << 30,
            wal_segment_bytes: 64 << 20,
            write_queue_depth: 1024,
            epoch: 1,
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
    shards: tokio::sync::Mutex<HashMap<(String, u32), Arc<Shard>>>,
}

impl Ingester {
    /// Opens the ingester and recovers every shard that has a WAL on disk.
    pub async fn open(cfg: IngesterConfig, store: Arc<dyn ObjectStore>) -> Result<Arc<Ingester>> {
        let budget = Arc::new(MemoryBudget { used: AtomicUsize::new(0), max: cfg.memtable_bytes_max });
        let ing = Arc::new(Ingester {
            catalogs: CatalogStore::new(store.clone()),
            store,
            budget,
            shards: tokio::sync::Mutex::new(HashMap::new()),
            cfg,
        });
        let wal_root = ing.cfg.data_dir.join("wal");
        std::fs::create_dir_all(&wal_root)?;
        for group in std::fs::read_dir(&wal_root)? {
            let group = group?;
            let Some(gname) = group.file_name().to_str().map(str::to_string) else {
                continue;
            };
            for shard in std::fs::read_dir(group.path())? {
                if let Some(id) = shard?.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    ing.shard(&gname, id).await?;
                }
            }
        }
        Ok(ing)
    }

    async fn shard(&self, group: &str, id: u32) -> Result<Arc<Shard>> {
        let mut shards = self.shards.lock().await;
        if let Some(s) = shards.get(&(group.to_string(), id)) {
            return Ok(s.clone());
        }
        let dir = self.cfg.data_dir.join("wal").join(group).join(format!("{id:04}"));
        let env = ShardEnv {
            epoch: self.cfg.epoch,
            wal_segment_bytes: self.cfg.wal_segment_bytes,
            queue_depth: self.cfg.write_queue_depth,
            catalogs: self.catalogs.clone(),
            store: self.store.clone(),
            budget: self.budget.clone(),
        };
        let s = Shard::open(group, id, dir, env).await?;
        shards.insert((group.to_string(), id), s.clone());
        Ok(s)
    }

    /// Durably writes validated points (of any shards of one measure). Returns
    /// when every point is fsync'd in its shard's WAL and visible to queries.
    pub async fn write(&self, schema: &MeasureSchema, points: Vec<Point>) -> Result<()> {
        let mut by_shard: HashMap<u32, Vec<Point>> = HashMap::new();
        for p in points {
            by_shard.entry(p.shard).or_default().push(p);
        }
        let mut pending = Vec::with_capacity(by_shard.len());
        for (id, pts) in by_shard {
            let shard = self.shard(&schema.group.name, id).await?;
            pending.push(async move { shard.write(schema, pts).await });
        }
        for r in futures::future::join_all(pending).await {
            r?;
        }
        Ok(())
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
        self.budget.used.load(Ordering::Relaxed)
    }

    /// Runs the flush policy (size, age) until the process ends.
    pub fn spawn_flusher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ing = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                let Some(ing) = ing.upgrade() else { break };
                // Every 5 s pick up catalog versions a compactor committed.
                if ticks.is_multiple_of(10)
                    && let Err(e) = ing.refresh_catalogs().await
                {
                    tracing::warn!(error = %e, "catalog refresh failed; will retry");
                }
                let shards: Vec<Arc<Shard>> = ing.shards.lock().await.values().cloned().collect();
                for s in shards {
                    if s.should_flush(ing.cfg.flush_bytes, ing.cfg.flush_interval)
                        && let Err(e) = s.flush().await
                    {
                        tracing::warn!(group = %s.group, shard = s.id, error = %e, "flush failed; will retry");
                    }
                }
            }
        })
    }
}
