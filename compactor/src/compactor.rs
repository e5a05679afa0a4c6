//! One compaction round over a shard: retention, then merges, then garbage
//! collection — each change a compare-and-swap catalog commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canopy_model::GroupSpec;
use canopy_storage::{CatalogState, CatalogStore, CompactionClaim, PartMeta, PendingDelete, StorageError, paths};
use object_store::ObjectStore;

use crate::merge::merge_parts;
use crate::policy::{PolicyConfig, pick_inputs};
use crate::{CompactError, Result};

/// Commit attempts before a step gives up for this round.
const COMMIT_ATTEMPTS_MAX: usize = 16;
/// Merges one shard may run per round, so one busy shard cannot starve others.
const MERGES_PER_ROUND_MAX: usize = 8;

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    pub policy: PolicyConfig,
    /// Upload chunk of a merge output (memory per merge in flight: about 3x this).
    pub chunk_bytes: usize,
    /// How long a claim on a segment holds if its compactor dies.
    pub claim_ttl: Duration,
    /// How long a removed part stays readable: longer than the query deadline,
    /// so a query that pinned an older catalog version never finds it gone.
    pub gc_grace: Duration,
    /// Unreferenced objects younger than this are never deleted: they may be
    /// uploads whose commit is still coming. Longer than the longest
    /// upload-to-commit window (flush: 5 minutes; a merge: its claim).
    pub orphan_min_age: Duration,
    /// Catalog versions kept behind the newest one.
    pub catalog_versions_kept: u64,
    /// Identifies this compactor in claims.
    pub holder: String,
    /// Fault injection for tests: stop right after uploading a merge output,
    /// before committing it and without releasing the claim — exactly what a
    /// compactor killed mid-merge leaves behind.
    #[doc(hidden)]
    pub crash_before_commit: bool,
    /// Fault injection for tests: a merge waits this long between uploading
    /// its output and committing it, so a test can kill the process there.
    #[doc(hidden)]
    pub stall_before_commit: Duration,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        CompactorConfig {
            policy: PolicyConfig::default(),
            chunk_bytes: 8 << 20,
            claim_ttl: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(600),
            orphan_min_age: Duration::from_secs(2 * 3600),
            catalog_versions_kept: 16,
            holder: format!("compactor-{}-{:x}", std::process::id(), now_ms()),
            crash_before_commit: false,
            stall_before_commit: Duration::ZERO,
        }
    }
}

/// What a round did to one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReport {
    pub merges: usize,
    pub parts_merged: usize,
    pub parts_expired: usize,
    pub objects_deleted: usize,
    pub versions_deleted: usize,
}

impl ShardReport {
    /// Adds another shard's report to this one.
    pub fn add(&mut self, r: &ShardReport) {
        self.merges += r.merges;
        self.parts_merged += r.parts_merged;
        self.parts_expired += r.parts_expired;
        self.objects_deleted += r.objects_deleted;
        self.versions_deleted += r.versions_deleted;
    }
}

/// Wall-clock Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    canopy_model::now_nanos() / 1_000_000
}

/// The compactor.
#[derive(Debug, Clone)]
pub struct Compactor {
    pub(crate) cfg: CompactorConfig,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) catalogs: CatalogStore,
}

impl Compactor {
    /// A compactor over `store`.
    pub fn new(cfg: CompactorConfig, store: Arc<dyn ObjectStore>) -> Compactor {
        Compactor { catalogs: CatalogStore::new(store.clone()), store, cfg }
    }

    /// Runs one round over every shard of `groups`; returns the summed report.
    pub async fn run_groups(&self, groups: &[canopy_model::GroupSpec]) -> Result<ShardReport> {
        let now = now_ms();
        let mut total = ShardReport { objects_deleted: self.sweep_probes(now).await?, ..Default::default() };
        for g in groups {
            for shard in 0..g.shard_num {
                total.add(&self.run_shard(g, shard, now).await?);
            }
        }
        Ok(total)
    }

    /// One round over a shard at time `now_ms` (Unix ms; a parameter so tests
    /// can move time forward).
    pub async fn run_shard(&self, group: &GroupSpec, shard: u32, now_ms: i64) -> Result<ShardReport> {
        let mut report = ShardReport { parts_expired: self.expire(group, shard, now_ms).await?, ..Default::default() };
        for _ in 0..MERGES_PER_ROUND_MAX {
            match self.compact_one(&group.name, shard, now_ms).await {
                Ok(Some(n)) => {
                    report.merges += 1;
                    report.parts_merged += n;
                }
                Ok(None) => break,
                Err(CompactError::Crashed) => return Err(CompactError::Crashed),
                Err(CompactError::Superseded(what)) => {
                    tracing::info!(%what, "compaction superseded; output left for orphan collection");
                }
                Err(e) => return Err(e),
            }
        }
        let (objects, versions) = self.collect_garbage(&group.name, shard, now_ms).await?;
        report.objects_deleted = objects;
        report.versions_deleted = versions;
        Ok(report)
    }

    /// Applies `change` to the newest catalog version and commits, retrying
    /// on conflicts. `change` returns false when there is nothing to do.
    pub(crate) async fn update(
        &self,
        group: &str,
        shard: u32,
        mut change: impl FnMut(&mut CatalogState) -> Result<bool>,
    ) -> Result<Option<CatalogState>> {
        for _ in 0..COMMIT_ATTEMPTS_MAX {
            let base = self.catalogs.load_latest(group, shard).await?;
            let mut next = base.clone();
            if !change(&mut next)? {
                return Ok(None);
            }
            match self.catalogs.commit(&base, next).await {
                Ok(c) => return Ok(Some(c)),
                Err(StorageError::CatalogConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CompactError::Contended(format!("{group}/{shard}")))
    }

    /// Retention: removes segments that ended more than the TTL ago from the
    /// catalog; their objects are deleted by GC after the grace period.
    async fn expire(&self, group: &GroupSpec, shard: u32, now_ms: i64) -> Result<usize> {
        let cutoff = now_ms.saturating_mul(1_000_000).saturating_sub(group.ttl_nanos);
        let mut expired = 0;
        self.update(&group.name, shard, |c| {
            let (gone, keep): (Vec<PartMeta>, Vec<PartMeta>) = c.parts.drain(..).partition(|p| p.segment_end <= cutoff);
            c.parts = keep;
            expired = gone.len();
            c.pending_deletes.extend(gone.into_iter().map(|p| PendingDelete { path: p.path, removed_at_ms: now_ms }));
            Ok(expired > 0)
        })
        .await?;
        if expired > 0 {
            tracing::info!(group = %group.name, shard, parts = expired, "expired segments past the TTL");
        }
        Ok(expired)
    }

    /// Claims one segment that needs a merge, merges, and commits the
    /// replacement. Returns the number of inputs merged, or `None` if no
    /// segment needs work.
    async fn compact_one(&self, group: &str, shard: u32, now_ms: i64) -> Result<Option<usize>> {
        let holder = self.cfg.holder.clone();
        let expires = now_ms + self.cfg.claim_ttl.as_millis() as i64;
        let mut picked: Option<(i64, Vec<PartMeta>, u64)> = None;
        let claimed = self
            .update(group, shard, |c| {
                c.claims.retain(|cl| cl.expires_at_ms > now_ms);
                let mut segments: BTreeMap<i64, Vec<&PartMeta>> = BTreeMap::new();
                for p in &c.parts {
                    segments.entry(p.segment_start).or_default().push(p);
                }
                for (seg, parts) in segments {
                    if c.claims.iter().any(|cl| cl.segment_start == seg) {
                        continue;
                    }
                    if let Some(r) = pick_inputs(&parts, &self.cfg.policy) {
                        let inputs: Vec<PartMeta> = parts[r].iter().map(|p| (*p).clone()).collect();
                        picked = Some((seg, inputs, c.next_part_id));
                        c.next_part_id += 1;
                        c.claims.push(CompactionClaim { segment_start: seg, holder: holder.clone(), expires_at_ms: expires });
                        return Ok(true);
                    }
                }
                picked = None;
                Ok(false)
            })
            .await?;
        let (Some(_), Some((seg, inputs, id))) = (claimed, picked) else { return Ok(None) };
        let out_path = paths::part(group, shard, seg, id, paths::nonce());
        if self.cfg.crash_before_commit {
            merge_parts(&self.store, &inputs, &out_path, self.cfg.chunk_bytes).await?;
            return Err(CompactError::Crashed);
        }
        let result = self.merge_and_commit(group, shard, seg, &inputs, id, &out_path, now_ms).await;
        if result.is_err() {
            // Release the claim so the segment is retried soon; a leftover
            // output is an orphan for GC.
            let _ = self.update(group, shard, |c| release(c, seg, &holder)).await;
        }
        result.map(|()| Some(inputs.len()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn merge_and_commit(
        &self,
        group: &str,
        shard: u32,
        seg: i64,
        inputs: &[PartMeta],
        id: u64,
        out_path: &str,
        now_ms: i64,
    ) -> Result<()> {
        let summary = merge_parts(&self.store, inputs, out_path, self.cfg.chunk_bytes).await?;
        if !self.cfg.stall_before_commit.is_zero() {
            tokio::time::sleep(self.cfg.stall_before_commit).await;
        }
        let level = inputs.iter().map(|p| p.level).max().unwrap_or(0) + 1;
        let max_seq = inputs.iter().map(|p| p.max_wal_seq).max().unwrap_or(0);
        let out = PartMeta::new(id, out_path.to_string(), seg, inputs[0].segment_end, max_seq, level, summary);
        let before: u64 = inputs.iter().map(|p| p.bytes).sum();
        let (rows_in, rows_out, bytes_out) = (inputs.iter().map(|p| p.rows).sum::<u64>(), out.rows, out.bytes);
        let holder = self.cfg.holder.clone();
        self.update(group, shard, |c| {
            let positions: Vec<Option<usize>> = inputs.iter().map(|i| c.parts.iter().position(|p| p.path == i.path)).collect();
            if positions.iter().any(Option::is_none) {
                return Err(CompactError::Superseded(format!("{group}/{shard} segment {seg}")));
            }
            let last = positions.iter().flatten().max().copied().expect("inputs present");
            let mut parts = Vec::with_capacity(c.parts.len() + 1 - inputs.len());
            for (i, p) in c.parts.drain(..).enumerate() {
                if i == last {
                    parts.push(out.clone());
                } else if !inputs.iter().any(|x| x.path == p.path) {
                    parts.push(p);
                }
            }
            c.parts = parts;
            c.pending_deletes.extend(inputs.iter().map(|p| PendingDelete { path: p.path.clone(), removed_at_ms: now_ms }));
            release(c, seg, &holder)?;
            Ok(true)
        })
        .await?;
        tracing::info!(group, shard, segment = seg, inputs = inputs.len(), rows_in, rows_out, bytes_in = before, bytes_out, "compacted");
        Ok(())
    }
}

/// Drops this compactor's claim on a segment; true if there was one.
fn release(c: &mut CatalogState, seg: i64, holder: &str) -> Result<bool> {
    let before = c.claims.len();
    c.claims.retain(|cl| !(cl.segment_start == seg && cl.holder == holder));
    Ok(c.claims.len() != before)
}
