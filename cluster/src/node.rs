//! Node identity and registration: each process registers
//! `/canopy/nodes/{host:grpc_port}` under an etcd lease it keeps alive, so a
//! crashed node disappears when the lease expires; shutdown deletes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Prefix of node registrations.
pub const NODES_PREFIX: &str = "/canopy/nodes/";

/// The roles a node can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Liaison,
    Ingester,
    Querier,
    Compactor,
}

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:grpc_port`; also the key under [`NODES_PREFIX`].
    pub id: String,
    pub roles: Vec<Role>,
    /// Where its gRPC services listen (internal services included).
    pub grpc_addr: String,
    /// Where its HTTP endpoints (`/api/healthz`, `/metrics`) listen.
    pub http_addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Set while an ingester hands its shards over before exiting: it is
    /// still alive (others wait for its releases) but gets no new shards.
    #[serde(default)]
    pub leaving: bool,
    /// Shards (`{group}/{shard:04}`) whose WAL this ingester still holds on
    /// disk but does not own, e.g. after it crashed and the cluster changed
    /// meanwhile. Their owners lend them back for one flush (see the shard
    /// manager), so no acknowledged point stays stranded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovering: Vec<String>,
}

impl NodeInfo {
    /// True if the node has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// True if every `selector` label is on the node with the same value.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Parses `k=v,k2=v2` (labels and selectors).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("label {kv:?} is not key=value")),
        })
        .collect()
}

/// A live registration; keeps its lease alive until dropped or deregistered.
pub struct Registration {
    client: Client,
    info: Arc<Mutex<NodeInfo>>,
    lease: Arc<std::sync::atomic::AtomicI64>,
    keeper: tokio::task::JoinHandle<()>,
}

fn key(id: &str) -> String {
    format!("{NODES_PREFIX}{id}")
}

async fn grant_and_put(client: &Client, info: &NodeInfo, ttl: Duration) -> Result<i64, etcd_client::Error> {
    let mut c = client.clone();
    let lease = c.lease_grant(ttl.as_secs().max(2) as i64, None).await?.id();
    let body = serde_json::to_vec(info).expect("node info serializes");
    c.put(key(&info.id), body, Some(PutOptions::new().with_lease(lease))).await?;
    Ok(lease)
}

impl Registration {
    /// Registers `info` under a lease of `ttl` and keeps it alive. If the
    /// lease is lost (etcd unreachable for longer than `ttl`), a new one is
    /// granted and the key written again once etcd answers.
    pub async fn register(client: Client, info: NodeInfo, ttl: Duration) -> Result<Registration, etcd_client::Error> {
        let lease = Arc::new(std::sync::atomic::AtomicI64::new(grant_and_put(&client, &info, ttl).await?));
        tracing::info!(node = %info.id, roles = ?info.roles, "registered");
        let info = Arc::new(Mutex::new(info));
        let keeper = tokio::spawn(keep_alive(client.clone(), info.clone(), ttl, lease.clone()));
        Ok(Registration { client, info, lease, keeper })
    }

    /// Marks the node as leaving (see [`NodeInfo::leaving`]).
    pub async fn set_leaving(&self) -> Result<(), etcd_client::Error> {
        self.update(|i| i.leaving = true).await
    }

    /// Publishes the shards this node is recovering (see [`NodeInfo::recovering`]);
    /// a no-op when unchanged.
    pub async fn set_recovering(&self, shards: Vec<String>) -> Result<(), etcd_client::Error> {
        if self.info.lock().await.recovering == shards {
            return Ok(());
        }
        self.update(move |i| i.recovering = shards).await
    }

    /// The node's published record.
    pub async fn info(&self) -> NodeInfo {
        self.info.lock().await.clone()
    }

    async fn update(&self, change: impl FnOnce(&mut NodeInfo)) -> Result<(), etcd_client::Error> {
        let mut info = self.info.lock().await;
        change(&mut info);
        let body = serde_json::to_vec(&*info).expect("node info serializes");
        let lease = self.lease.load(std::sync::atomic::Ordering::Relaxed);
        self.client.clone().put(key(&info.id), body, Some(PutOptions::new().with_lease(lease))).await?;
        Ok(())
    }

    /// Removes the registration now (revoking the lease deletes the key).
    pub async fn deregister(&self) {
        self.keeper.abort();
        let lease = self.lease.load(std::sync::atomic::Ordering::Relaxed);
        let id = self.info.lock().await.id.clone();
        if let Err(e) = self.client.clone().lease_revoke(lease).await {
            tracing::warn!(node = %id, error = %e, "lease revoke failed; the registration expires with its lease");
        }
        tracing::info!(node = %id, "deregistered");
    }
}

async fn keep_alive(client: Client, info: Arc<Mutex<NodeInfo>>, ttl: Duration, lease: Arc<std::sync::atomic::AtomicI64>) {
    let every = (ttl / 3).max(Duration::from_millis(500));
    let node = info.lock().await.id.clone();
    loop {
        let id = lease.load(std::sync::atomic::Ordering::Relaxed);
        let alive = async {
            let (mut keeper, mut stream) = client.clone().lease_keep_alive(id).await?;
            loop {
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Ok::<(), etcd_client::Error>(()),
                }
                tokio::time::sleep(every).await;
            }
        };
        match alive.await {
            Ok(()) => tracing::warn!(%node, "lease expired; registering again"),
            Err(e) => tracing::warn!(%node, error = %e, "lease keep-alive failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Re-register only if the lease is really gone; a transient stream
        // error leaves the old lease usable.
        let expired = match client.clone().lease_time_to_live(id, None).await {
            Ok(r) => r.ttl() <= 0,
            Err(_) => false,
        };
        if expired {
            let current = info.lock().await.clone();
            match grant_and_put(&client, &current, ttl).await {
                Ok(new) => lease.store(new, std::sync::atomic::Ordering::Relaxed),
                Err(e) => tracing::warn!(%node, error = %e, "re-registration failed; retrying"),
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
