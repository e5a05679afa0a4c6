//! Garbage collection: deleting objects no catalog version a running query
//! may hold still references.
//!
//! * Parts removed by a commit (compaction inputs, expired segments) are
//!   recorded in the catalog as pending deletes with the commit time, and
//!   deleted once `gc_grace` — longer than the query deadline — has passed:
//!   a query pins its catalog version for at most that long.
//! * Orphans (uploads whose commit never came: a crash, a lost race) are
//!   found by listing `parts/{group}/{shard}/` and comparing with the newest
//!   catalog; only objects older than `orphan_min_age` are deleted, so an
//!   upload whose commit is still coming is safe. A listing that misses
//!   objects only delays their deletion to a later round: nothing relies on
//!   it being complete.
//! * Old catalog versions beyond the newest `catalog_versions_kept` are
//!   deleted once older than the grace period.
//! * Start-up probe keys (`_canopy/probe/`) a crash left between their
//!   create and delete, once older than `orphan_min_age` (a probe lives for
//!   milliseconds).

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::Result;
use crate::compactor::Compactor;

impl Compactor {
    /// Runs GC for a shard; returns (objects deleted, catalog versions deleted).
    pub(crate) async fn collect_garbage(&self, group: &str, shard: u32, now_ms: i64) -> Result<(usize, usize)> {
        let grace = self.cfg.gc_grace.as_millis() as i64;
        let catalog = self.catalogs.load_latest(group, shard).await?;
        let due: Vec<String> =
            catalog.pending_deletes.iter().filter(|d| d.removed_at_ms + grace <= now_ms).map(|d| d.path.clone()).collect();
        let mut deleted = 0;
        for path in &due {
            match self.store.delete(&Path::from(path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        if !due.is_empty() {
            self.update(group, shard, |c| {
                let before = c.pending_deletes.len();
                c.pending_deletes.retain(|d| !due.contains(&d.path));
                Ok(c.pending_deletes.len() != before)
            })
            .await?;
        }
        deleted += self.delete_orphans(group, shard, now_ms).await?;
        let versions = self.delete_old_versions(group, shard, now_ms).await?;
        Ok((deleted, versions))
    }

    /// Deletes the start-up probe keys a crashed process left behind;
    /// returns how many. Bucket-wide, so once per round, not per shard.
    pub async fn sweep_probes(&self, now_ms: i64) -> Result<usize> {
        let min_age = self.cfg.orphan_min_age.as_millis() as i64;
        let prefix = Path::from(canopy_storage::paths::PROBE_DIR);
        let listed: Vec<object_store::ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut deleted = 0;
        for m in listed.into_iter().filter(|m| m.last_modified.timestamp_millis() + min_age <= now_ms) {
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
            tracing::info!(path = %m.location, "deleted a stray start-up probe");
        }
        Ok(deleted)
    }

    async fn delete_orphans(&self, group: &str, shard: u32, now_ms: i64) -> Result<usize> {
        let min_age = self.cfg.orphan_min_age.as_millis() as i64;
        let prefix = Path::from(format!("parts/{group}/{shard:04}"));
        let listed: Vec<object_store::ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await?;
        // Read the catalog after listing: everything committed before the
        // listing is referenced by this (or a later) version.
        let catalog = self.catalogs.load_latest(group, shard).await?;
        // Compare keys as the store spells them: a listing returns encoded
        // `Path`s, the catalog holds the strings the writer built them from.
        let referenced: HashSet<Path> = catalog
            .parts
            .iter()
            .map(|p| Path::from(p.path.as_str()))
            .chain(catalog.pending_deletes.iter().map(|d| Path::from(d.path.as_str())))
            .collect();
        let mut deleted = 0;
        for m in listed {
            let old_enough = m.last_modified.timestamp_millis() + min_age <= now_ms;
            if old_enough && !referenced.contains(&m.location) {
                match self.store.delete(&m.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(path = %m.location, "deleted orphan object");
            }
        }
        Ok(deleted)
    }

    async fn delete_old_versions(&self, group: &str, shard: u32, now_ms: i64) -> Result<usize> {
        let grace = self.cfg.gc_grace.as_millis() as i64;
        let dir = canopy_storage::paths::catalog_dir(group, shard);
        let listed: Vec<object_store::ObjectMeta> = self.store.list(Some(&dir)).try_collect().await?;
        let Some(newest) = listed.iter().filter_map(|m| m.location.filename().and_then(canopy_storage::paths::parse_catalog_version)).max()
        else {
            return Ok(0);
        };
        let mut deleted = 0;
        for m in &listed {
            let Some(v) = m.location.filename().and_then(canopy_storage::paths::parse_catalog_version) else { continue };
            if v + self.cfg.catalog_versions_kept < newest && m.last_modified.timestamp_millis() + grace <= now_ms {
                self.catalogs.delete_version(group, shard, v).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
