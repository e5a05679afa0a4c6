//! Canopy's compactor: for each (group, shard, time segment) it merges parts
//! into larger ones by a size-tiered policy (rows sorted by series and time,
//! deduplicated by version), drops segments past the group's TTL, and deletes
//! objects no catalog version a running query may hold still references.
//!
//! Every change is one compare-and-swap catalog commit, so compactions race
//! safely with ingester flushes and with other compactors; a claim recorded
//! in the catalog keeps two compactors off the same segment.

mod compactor;
mod error;
mod gc;
mod merge;
mod policy;

pub use compactor::{Compactor, CompactorConfig, ShardReport};
pub use error::{CompactError, Result};
pub use merge::merge_parts;
pub use policy::{PolicyConfig, pick_inputs};
