//! Canopy's querier: executes a query over one shard's pinned catalog
//! version (parts read from object storage with range requests) plus the
//! ingester's points above that version's WAL watermark, deduplicates by
//! (series, timestamp) and reduces to a partial result for the merge.

mod dedup;
mod error;
mod index_cache;
mod querier;

pub use dedup::dedup_rows;
pub use error::{QueryError, Result};
pub use querier::{Querier, QuerierConfig};
