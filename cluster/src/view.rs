//! What a cluster node knows of the cluster: mirrors of the node
//! registrations, shard ownership records and schemas, each kept current by
//! an etcd watch (nothing is polled).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canopy_api::v1::Group;
use canopy_meta::SchemaRegistry;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use prost::Message;

use crate::node::{NODES_PREFIX, NodeInfo};
use crate::ownership::{SHARDS_PREFIX, ShardOwner, parse_shard_key, shard_key};
use crate::watched::WatchedPrefix;

const GROUPS_PREFIX: &str = "/canopy/groups/";
const MEASURES_PREFIX: &str = "/canopy/measures/";

/// Connects to etcd (comma-separated endpoints accepted in each item);
/// `https://` endpoints need [`EtcdAccess::tls`].
pub async fn connect(endpoints: &[String], access: &EtcdAccess) -> Result<Client, etcd_client::Error> {
    let eps: Vec<String> = endpoints.iter().flat_map(|e| e.split(',')).map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let Some(a) = &access.auth {
        // Tokens expire (etcd's simple tokens after 5 min idle, JWTs at
        // their TTL): log in again rather than fail every call after.
        opts = opts.with_user(a.user.clone(), a.password.clone()).with_auto_token_refresh(true);
    }
    if let Some(t) = &access.tls {
        opts = opts.with_tls(t.options());
    }
    Client::connect(eps, Some(opts)).await
}

/// How a node reaches etcd beyond its endpoints: a user, TLS, both or neither.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    pub auth: Option<EtcdAuth>,
    pub tls: Option<EtcdTls>,
}

/// An etcd user and password (etcd's own authentication, `etcdctl auth enable`).
#[derive(Clone)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdAuth({})", self.user)
    }
}

/// TLS towards etcd: the CA its certificate is checked against (the
/// system's roots are not used: etcd clusters run on a private CA) and,
/// when etcd checks clients (`--client-cert-auth`), this node's certificate
/// and key. All PEM.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdTls(client certificate: {})", self.identity.is_some())
    }
}

impl EtcdTls {
    /// Reads the PEM files (`cert` and `key` together or not at all).
    pub fn from_files(ca: &std::path::Path, identity: Option<(&std::path::Path, &std::path::Path)>) -> Result<EtcdTls, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let identity = match identity {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(EtcdTls { ca_pem: read(ca)?, identity })
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut o = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            o = o.identity(etcd_client::Identity::from_pem(cert, key));
        }
        o
    }
}

/// A shard's record with the etcd revision it was read at (for CAS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub record: ShardOwner,
    pub mod_revision: i64,
}

/// The watched cluster state.
#[derive(Clone)]
pub struct ClusterView {
    pub client: Client,
    pub nodes: Arc<WatchedPrefix>,
    pub shards: Arc<WatchedPrefix>,
    pub groups: Arc<WatchedPrefix>,
    pub measures: Arc<WatchedPrefix>,
}

impl ClusterView {
    /// Starts the watches; returns once each has its first listing.
    pub async fn start(client: Client) -> Result<ClusterView, etcd_client::Error> {
        Ok(ClusterView {
            nodes: WatchedPrefix::start(client.clone(), NODES_PREFIX).await?,
            shards: WatchedPrefix::start(client.clone(), SHARDS_PREFIX).await?,
            groups: WatchedPrefix::start(client.clone(), GROUPS_PREFIX).await?,
            measures: WatchedPrefix::start(client.clone(), MEASURES_PREFIX).await?,
            client,
        })
    }

    /// Registered nodes (undecodable entries are skipped).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.snapshot().values().filter_map(|e| serde_json::from_slice(&e.value).ok()).collect()
    }

    /// One registered node.
    pub fn node(&self, id: &str) -> Option<NodeInfo> {
        self.nodes.get(id).and_then(|e| serde_json::from_slice(&e.value).ok())
    }

    /// Every shard's ownership record.
    pub fn owners(&self) -> BTreeMap<(String, u32), OwnerRecord> {
        self.shards
            .snapshot()
            .into_iter()
            .filter_map(|(k, e)| {
                let key = parse_shard_key(&k)?;
                let record: ShardOwner = serde_json::from_slice(&e.value).ok()?;
                Some((key, OwnerRecord { record, mod_revision: e.mod_revision }))
            })
            .collect()
    }

    /// One shard's ownership record.
    pub fn owner(&self, group: &str, shard: u32) -> Option<ShardOwner> {
        self.shards.get(&shard_key(group, shard)).and_then(|e| serde_json::from_slice(&e.value).ok())
    }

    /// Shard counts of every group.
    pub fn group_shards(&self) -> BTreeMap<String, u32> {
        self.groups
            .snapshot()
            .into_iter()
            .filter_map(|(name, e)| {
                let g = Group::decode(e.value.as_slice()).ok()?;
                Some((name, g.resource_opts?.shard_num))
            })
            .collect()
    }

    /// Writes a shard's record if it is still at `expected` (the mod
    /// revision read, or `None` for "no record yet"); false if it changed.
    pub async fn swap_owner(&self, group: &str, shard: u32, expected: Option<i64>, next: &ShardOwner) -> Result<bool, etcd_client::Error> {
        let key = format!("{SHARDS_PREFIX}{}", shard_key(group, shard));
        let cmp = match expected {
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(key.as_str(), CompareOp::Equal, rev),
        };
        let body = serde_json::to_vec(next).expect("record serializes");
        let r = self.client.clone().txn(Txn::new().when([cmp]).and_then([TxnOp::put(key, body, None)])).await?;
        Ok(r.succeeded())
    }

    /// Keeps `registry`'s compiled schemas fresh: any schema change seen by
    /// the watch (made through any liaison) drops them.
    pub fn invalidate_on_schema_change(&self, registry: Arc<SchemaRegistry>) {
        for w in [self.groups.clone(), self.measures.clone()] {
            let mut rx = w.subscribe();
            let registry = registry.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    registry.forget_all();
                }
            });
        }
    }
}
