//! Canopy's metadata: a small revisioned key-value store behind the
//! [`MetadataStore`] trait (embedded and persisted to a local file in
//! standalone; etcd in cluster mode) and the [`SchemaRegistry`] that keeps
//! groups and measures in it, validated and compiled for the write path.

mod embedded;
mod error;
mod kv;
mod registry;

pub use embedded::{EmbeddedStore, MetaFileError};
pub use error::{MetaError, Result};
pub use kv::{KeyValue, MetadataStore, PutCondition};
pub use registry::SchemaRegistry;
