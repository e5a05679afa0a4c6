//! The ingester side of shard ownership: keeps the shards this ingester
//! holds equal to the shards dealt to it, with fenced handovers.
//!
//! - Dealt to me, not held: take it if it has no record, its owner released
//!   it, its owner's registration is gone (crashed; lease expired), or the
//!   record already names me (restart). Taking = CAS the record to
//!   {me, epoch + 1}, then `Ingester::acquire` (WAL replay + a catalog
//!   version under the new epoch, which fences the previous owner).
//! - Held, dealt elsewhere (or I am leaving): `Ingester::release` (stop
//!   writes, flush every acknowledged point), then mark the record released.
//! - Held, but the record names someone else or a newer epoch: I was taken
//!   over (lease lost) — drop it without flushing; its WAL stays on disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use canopy_ingester::Ingester;

use crate::ownership::{ShardOwner, assign, eligible_ingesters};
use crate::view::{ClusterView, OwnerRecord};

/// Keeps an ingester's shards in line with the assignment.
pub struct ShardManager {
    view: ClusterView,
    ingester: Arc<Ingester>,
    me: String,
    selector: BTreeMap<String, String>,
    leaving: AtomicBool,
    /// Serializes reconcile rounds (the loop and `leave`).
    round: tokio::sync::Mutex<()>,
}

/// How soon to retry a round that could not finish (an error, or a handover
/// waiting on another node); otherwise rounds run on watch events.
const RETRY: Duration = Duration::from_secs(1);

impl ShardManager {
    /// A manager for ingester `me` (its node id).
    pub fn new(view: ClusterView, ingester: Arc<Ingester>, me: String, selector: BTreeMap<String, String>) -> Arc<ShardManager> {
        Arc::new(ShardManager { view, ingester, me, selector, leaving: AtomicBool::new(false), round: tokio::sync::Mutex::new(()) })
    }

    /// Runs rounds on every change of nodes, groups or ownership records.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut nodes = me.view.nodes.subscribe();
            let mut shards = me.view.shards.subscribe();
            let mut groups = me.view.groups.subscribe();
            loop {
                let settled = me.reconcile().await;
                if me.leaving.load(Ordering::Relaxed) {
                    return;
                }
                let wait = if settled { Duration::from_secs(3600) } else { RETRY };
                tokio::select! {
                    _ = nodes.changed() => {}
                    _ = shards.changed() => {}
                    _ = groups.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// Hands every shard over: stops taking new ones and releases each held
    /// one (flushing it) until none is left.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        loop {
            self.reconcile().await;
            if self.ingester.owned().await.is_empty() {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One round; true if nothing is left to do.
    pub async fn reconcile(&self) -> bool {
        let _round = self.round.lock().await;
        let nodes = self.view.nodes();
        let mut eligible = eligible_ingesters(&nodes, &self.selector);
        if self.leaving.load(Ordering::Relaxed) {
            eligible.retain(|n| *n != self.me);
        }
        let dealt = assign(&self.view.group_shards(), &eligible);
        let owners = self.view.owners();
        let live: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let mine = |key: &(String, u32)| dealt.get(key) == Some(&self.me);
        let mut settled = true;

        // 1. Held shards: drop the ones taken over, release the ones dealt elsewhere.
        for (group, shard, epoch) in self.ingester.owned().await {
            let key = (group.clone(), shard);
            // The mirror may lag this node's own claim (older epoch): only a
            // newer epoch means someone else took the shard.
            if owners.get(&key).is_some_and(|r| r.record.epoch > epoch) {
                self.ingester.forget(&group, shard).await;
                continue;
            }
            if mine(&key) {
                continue;
            }
            settled = false;
            if let Err(e) = self.ingester.release(&group, shard).await {
                tracing::warn!(group, shard, error = %e, "release failed; will retry");
            }
        }
        let held: Vec<(String, u32)> = self.ingester.owned().await.into_iter().map(|(g, s, _)| (g, s)).collect();

        // 2. Shards dealt here: take the free ones.
        for (key, owner) in &dealt {
            if *owner != self.me || held.contains(key) {
                continue;
            }
            let rec = owners.get(key);
            let free = rec.is_none_or(|r| r.record.released || r.record.owner == self.me || !live.contains(&r.record.owner));
            if !free {
                // The owner is alive and still flushing; its release wakes us.
                settled = false;
                continue;
            }
            settled &= self.take(&key.0, key.1, rec).await;
        }

        // 3. Records still naming this node for shards it no longer holds
        // and was not dealt: mark them released so the new owner may take
        // over — unless this node's WAL may still hold points of the shard
        // (a restart after a crash): then take it once more to flush them;
        // the next round releases it.
        let on_disk = self.ingester.shards_on_disk().unwrap_or_default();
        for (key, rec) in &owners {
            if rec.record.owner != self.me || rec.record.released || held.contains(key) || mine(key) {
                continue;
            }
            settled = false;
            if on_disk.contains(key) {
                self.take(&key.0, key.1, Some(rec)).await;
                continue;
            }
            let released = ShardOwner { released: true, ..rec.record.clone() };
            match self.view.swap_owner(&key.0, key.1, Some(rec.mod_revision), &released).await {
                Ok(true) => tracing::info!(group = %key.0, shard = key.1, epoch = rec.record.epoch, "handed shard over"),
                Ok(false) => {}
                Err(e) => tracing::warn!(group = %key.0, shard = key.1, error = %e, "could not mark shard released; will retry"),
            }
        }
        settled
    }

    /// Claims a shard under the next epoch and acquires it; true on success.
    async fn take(&self, group: &str, shard: u32, rec: Option<&OwnerRecord>) -> bool {
        let epoch = rec.map_or(1, |r| r.record.epoch + 1);
        let next = ShardOwner { owner: self.me.clone(), epoch, released: false };
        match self.view.swap_owner(group, shard, rec.map(|r| r.mod_revision), &next).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(group, shard, error = %e, "could not claim shard; will retry");
                return false;
            }
        }
        match self.ingester.acquire(group, shard, epoch).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(group, shard, epoch, error = %e, "acquire failed; will retry");
                false
            }
        }
    }
}
