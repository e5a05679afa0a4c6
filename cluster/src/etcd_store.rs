//! [`MetadataStore`] on etcd: schemas live in etcd in cluster mode, with
//! conditional puts as etcd transactions on the key's revisions.

use async_trait::async_trait;
use canopy_meta::{KeyValue, MetaError, MetadataStore, PutCondition, Result};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

/// Metadata in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdStore")
    }
}

/// Maps an etcd failure to a metadata storage error.
pub(crate) fn etcd_err(e: etcd_client::Error) -> MetaError {
    MetaError::Storage(format!("etcd: {e}"))
}

impl EtcdStore {
    /// A store over a connected client.
    pub fn new(client: Client) -> EtcdStore {
        EtcdStore { client }
    }
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue { key: String::from_utf8_lossy(k.key()).into_owned(), value: k.value().to_vec(), mod_revision: k.mod_revision() }
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let r = self.client.clone().get(key, None).await.map_err(etcd_err)?;
        Ok(r.kvs().first().map(kv))
    }

    async fn put(&self, key: &str, value: Vec<u8>, cond: PutCondition) -> Result<i64> {
        let compare = match cond {
            PutCondition::Any => vec![],
            PutCondition::Absent => vec![Compare::create_revision(key, CompareOp::Equal, 0)],
            PutCondition::Revision(r) => vec![Compare::mod_revision(key, CompareOp::Equal, r)],
        };
        let txn = Txn::new().when(compare).and_then([TxnOp::put(key, value, None)]);
        let r = self.client.clone().txn(txn).await.map_err(etcd_err)?;
        if !r.succeeded() {
            return Err(match cond {
                PutCondition::Absent => MetaError::AlreadyExists(key.to_string()),
                _ => MetaError::Conflict(key.to_string()),
            });
        }
        Ok(r.header().map(|h| h.revision()).unwrap_or_default())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let r = self.client.clone().delete(key, None).await.map_err(etcd_err)?;
        Ok(r.deleted() > 0)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let r = self.client.clone().get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(etcd_err)?;
        let mut out: Vec<KeyValue> = r.kvs().iter().map(kv).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
