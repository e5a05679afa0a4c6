//! Canopy's querier: the query path end to end. The root
//! ([`execute_root`]) fans a plan out to every shard, merges the partial
//! results and shapes the answer; a leaf ([`Querier::execute_shard`])
//! executes it over one shard's pinned catalog version (parts read from
//! object storage with range requests) plus the ingester's points above that
//! version's WAL watermark: blocks are decoded into typed columns,
//! deduplicated only where sources overlap, filtered into row ranges and
//! folded into aggregates without per-point objects. A shard spread over
//! several queriers (or the query function) is planned by time segment
//! ([`segments_of`]). The liaison and the cluster only carry requests
//! between the two. Part bytes are read through a [`CachedStore`] (memory and
//! local disk) so a repeated query pays the object store nothing.

mod cached_store;
mod error;
mod fold;
mod fragment;
mod index_cache;
mod leaf;
mod merge;
mod pool;
mod querier;
mod root;

pub use cached_store::{CacheConfig, CacheCounters, CachedStore};
pub use error::{QueryError, Result};
pub use fragment::{REQUESTS_PER_PART, SegmentWork, segments_of};
pub use pool::CpuPool;
pub use querier::{Querier, QuerierConfig};
pub use root::{execute_root, finish, merge_partials, raw_partial};
