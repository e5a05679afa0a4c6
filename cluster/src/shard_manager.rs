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
//!   Paced: every node computes the same set of handovers that may start
//!   ([`crate::placement::handovers_to_start`]: pending moves in key order,
//!   at most [`Pacing::per_ingester`] per owner and [`Pacing::cluster`] in
//!   all, counting those in flight — released, not yet taken), so a join
//!   moves shards a few at a time while writes continue. A leaving node, a
//!   lent shard and a deleted group's shard are not paced.
//! - Held, but the record names someone else or a newer epoch: I was taken
//!   over (lease lost) — drop it without flushing; its WAL stays on disk.
//! - Recovery: a shard whose WAL is on disk here but which is not held here
//!   (a crash, then the cluster changed) is published in this node's
//!   `recovering` list. Its owner releases it even though it is dealt to
//!   it, and this node takes it (replaying and flushing its WAL). From then
//!   on this node is its current owner: the placement keeps it here if the
//!   balance allows, else it is released and moves on like any other shard.
//!   Nothing acknowledged stays stranded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use canopy_ingester::Ingester;

use crate::node::{Registration, Role};
use crate::ownership::{ShardOwner, current_owners, eligible_ingesters, parse_shard_key, shard_key};
use crate::placement::{assign, handovers_to_start};
use crate::view::{ClusterView, OwnerRecord};

/// How many handovers may be in flight at once (released by their owner,
/// not yet taken by the next). Every node picks the same handovers from the
/// same view, so the bounds hold cluster-wide; while views lag, a node may
/// start one that another has not yet seen finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Handovers one ingester has in flight.
    pub per_ingester: usize,
    /// Handovers in flight across the cluster.
    pub cluster: usize,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing { per_ingester: 2, cluster: 16 }
    }
}

/// Keeps an ingester's shards in line with the assignment.
pub struct ShardManager {
    view: ClusterView,
    ingester: Arc<Ingester>,
    registration: Arc<Registration>,
    me: String,
    selector: BTreeMap<String, String>,
    pacing: Pacing,
    leaving: AtomicBool,
    /// Serializes reconcile rounds (the loop and `leave`).
    round: tokio::sync::Mutex<()>,
}

/// How soon to retry a round that could not finish (an error, or a handover
/// waiting on another node); otherwise rounds run on watch events.
const RETRY: Duration = Duration::from_secs(1);
/// How long a leaving ingester waits to flush shards it is recovering.
const RECOVERY_ON_LEAVE: Duration = Duration::from_secs(30);

impl ShardManager {
    /// A manager for the ingester registered as `registration`.
    pub async fn new(
        view: ClusterView,
        ingester: Arc<Ingester>,
        registration: Arc<Registration>,
        selector: BTreeMap<String, String>,
        pacing: Pacing,
    ) -> Arc<ShardManager> {
        let me = registration.info().await.id;
        Arc::new(ShardManager {
            view,
            ingester,
            registration,
            me,
            selector,
            pacing,
            leaving: AtomicBool::new(false),
            round: tokio::sync::Mutex::new(()),
        })
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

    /// Hands every shard over: marks the node leaving, stops taking dealt
    /// shards and releases each held one (flushing it) until none is left.
    /// Shards it is recovering get up to `RECOVERY_ON_LEAVE` to be flushed.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        if let Err(e) = self.registration.set_leaving().await {
            tracing::warn!(error = %e, "could not mark this node leaving; its shards move when its lease expires");
        }
        let started = tokio::time::Instant::now();
        loop {
            self.reconcile().await;
            let recovering = !self.ingester.shards_on_disk().unwrap_or_default().is_empty();
            if self.ingester.owned().await.is_empty() && (!recovering || started.elapsed() > RECOVERY_ON_LEAVE) {
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
        let owners = self.view.owners();
        let live: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let current = current_owners(owners.iter().map(|(k, r)| (k, &r.record)), &live);
        let dealt = assign(&self.view.group_shards(), &eligible, &current);
        let leaving = self.leaving.load(Ordering::Relaxed);
        // Handovers in flight: released records of shards that still exist
        // (a deleted group's records are never taken and must not count).
        let mut in_flight: BTreeMap<String, usize> = BTreeMap::new();
        for (key, r) in &owners {
            if r.record.released && dealt.contains_key(key) {
                *in_flight.entry(r.record.owner.clone()).or_default() += 1;
            }
        }
        let may_start = handovers_to_start(&current, &dealt, &in_flight, self.pacing.per_ingester, self.pacing.cluster);
        // Shards other live ingesters hold unflushed WAL of: lend them.
        let lent: BTreeSet<(String, u32)> = nodes
            .iter()
            .filter(|n| n.id != self.me && n.has(Role::Ingester))
            .flat_map(|n| n.recovering.iter().filter_map(|k| parse_shard_key(k)))
            .collect();
        let mine = |key: &(String, u32)| dealt.get(key) == Some(&self.me) && !lent.contains(key);
        let mut settled = true;

        // 1. Held shards: drop the ones taken over, release the ones dealt
        // elsewhere or lent to a recovering node.
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
            // Leaving, lending to a recovering node and letting go of a
            // deleted group's shard are never held back.
            let paced = !leaving && !lent.contains(&key) && dealt.contains_key(&key);
            if paced && !may_start.contains(&key) {
                continue;
            }
            if let Err(e) = self.ingester.release(&group, shard).await {
                tracing::warn!(group, shard, error = %e, "release failed; will retry");
            }
        }
        let held: Vec<(String, u32)> = self.ingester.owned().await.into_iter().map(|(g, s, _)| (g, s)).collect();
        let on_disk = self.ingester.shards_on_disk().unwrap_or_default();
        let free = |rec: Option<&OwnerRecord>| {
            rec.is_none_or(|r| r.record.released || r.record.owner == self.me || !live.contains(&r.record.owner))
        };

        // 2. Shards to take: those dealt here, and those whose WAL this node
        // still holds (to replay and flush them; the next round releases
        // them again if they are dealt elsewhere).
        let wanted: BTreeSet<&(String, u32)> = dealt
            .iter()
            .filter(|(k, o)| **o == self.me && !lent.contains(*k))
            .map(|(k, _)| k)
            .chain(on_disk.iter())
            .filter(|k| !held.contains(*k))
            .collect();
        for key in wanted {
            let rec = owners.get(key);
            if !free(rec) {
                // The owner is alive and still flushing; its release wakes us.
                settled = false;
                continue;
            }
            settled &= self.take(&key.0, key.1, rec).await;
        }

        // 3. Records still naming this node for shards it neither holds nor
        // wants: mark them released so the next owner may take over.
        for (key, rec) in &owners {
            if rec.record.owner != self.me || rec.record.released || held.contains(key) || mine(key) || on_disk.contains(key) {
                continue;
            }
            settled = false;
            let released = ShardOwner { released: true, ..rec.record.clone() };
            match self.view.swap_owner(&key.0, key.1, Some(rec.mod_revision), &released).await {
                Ok(true) => tracing::info!(group = %key.0, shard = key.1, epoch = rec.record.epoch, "handed shard over"),
                Ok(false) => {}
                Err(e) => tracing::warn!(group = %key.0, shard = key.1, error = %e, "could not mark shard released; will retry"),
            }
        }

        // Publish what this node is recovering: WAL on disk, shard not held.
        let held: Vec<(String, u32)> = self.ingester.owned().await.into_iter().map(|(g, s, _)| (g, s)).collect();
        let recovering: Vec<String> = self
            .ingester
            .shards_on_disk()
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !held.contains(k))
            .map(|(g, s)| shard_key(&g, s))
            .collect();
        settled &= recovering.is_empty();
        if let Err(e) = self.registration.set_recovering(recovering).await {
            tracing::warn!(error = %e, "could not publish the shards this node is recovering; will retry");
            settled = false;
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
