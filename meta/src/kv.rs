//! The key-value contract every metadata backend provides.

use async_trait::async_trait;

use crate::Result;

/// A stored key with its value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// When a put may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// Unconditionally.
    Any,
    /// Only if the key does not exist.
    Absent,
    /// Only if the key's mod revision is exactly this.
    Revision(i64),
}

/// A linearizable key-value store with a global revision counter, as etcd
/// provides; the embedded store gives the same guarantees in one process.
#[async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Writes one key if `cond` holds; returns the new revision. A failed
    /// condition is [`crate::MetaError::Conflict`] (or `AlreadyExists` for `Absent`).
    async fn put(&self, key: &str, value: Vec<u8>, cond: PutCondition) -> Result<i64>;
    /// Deletes one key; true if it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// All keys with the prefix, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>>;
}
