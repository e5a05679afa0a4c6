//! Canopy's storage layer on object storage: where every object lives
//! ([`paths`]), how a part is encoded (Arrow IPC + zstd over columns encoded
//! for time series, [`part`]), and the versioned catalog whose atomic commits
//! make parts visible ([`catalog`]).

/// Decoder property tests check allocation sizes (`fuzz_decoder`).
#[cfg(test)]
#[global_allocator]
static ALLOC: canopy_model::testing::LargestAlloc = canopy_model::testing::LargestAlloc;

pub mod catalog;
pub mod catalog_format;
mod counting;
mod error;
pub mod part;
pub mod paths;
pub mod query_stats;
mod ranges;
mod series_filter;
mod store;
mod zstd_json;

pub use catalog::{CatalogState, CatalogStore, CompactionClaim, MeasureStats, PartMeta, PendingDelete, TagProbe};
pub use catalog_format::{CATALOG_FORMAT, CatalogFormatError, LEGACY_WAL_ID};
pub use counting::{CountingStore, STORE_OPS, StoreCounters};
pub use error::{Result, StorageError};
pub use ranges::{COALESCE_GAP, get_ranges_coalesced};
pub use series_filter::{FILTER_SERIES_MAX, KeyFilter, SeriesFilter, tag_key_hash, tag_value_hash};
pub use store::{ObjectStoreConfig, open_object_store, probe_conditional_create};
