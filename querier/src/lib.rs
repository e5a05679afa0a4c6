//! Canopy's querier: executes a query over one shard's pinned catalog
//! version (parts read from object storage with range requests) plus the
//! ingester's points above that version's WAL watermark. Blocks are decoded
//! into typed columns, deduplicated only where sources overlap, filtered
//! into row ranges and folded into aggregates without per-point objects.

mod error;
mod fold;
mod index_cache;
mod leaf;
mod merge;
mod pool;
mod querier;

pub use error::{QueryError, Result};
pub use pool::CpuPool;
pub use querier::{Querier, QuerierConfig};
