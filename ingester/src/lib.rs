//! Canopy's ingester: owns shards; appends each write to the shard's WAL
//! and fsyncs (group commit) before acknowledging; buffers points in a
//! memtable; flushes them as parts to object storage and makes them visible
//! with an atomic catalog commit that records the WAL watermark; answers
//! queries for the points not yet in parts.

/// Decoder property tests check allocation sizes (`fuzz_decoder`).
#[cfg(test)]
#[global_allocator]
static ALLOC: canopy_model::testing::LargestAlloc = canopy_model::testing::LargestAlloc;

mod budget;
mod chunk;
mod error;
mod flush;
mod flush_policy;
mod ingester;
mod last_values;
mod memtable;
mod shard;
pub mod wal;

pub use error::{IngestError, Result};

/// Seconds a flush may take from its first upload to its commit (see
/// `UPLOAD_COMMIT_WINDOW`); garbage collection's orphan age must exceed it.
pub const UPLOAD_COMMIT_WINDOW_SECS: u64 = flush::UPLOAD_COMMIT_WINDOW.as_secs();
pub use ingester::{Ingester, IngesterConfig};
pub use memtable::HEAD_ROWS_MAX;
pub use shard::ShardSnapshot;
