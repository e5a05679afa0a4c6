//! Canopy's data model, free of I/O: compiled measure schemas, typed values,
//! series keys and shard routing, point validation, query plans (criteria,
//! aggregation, top-N, ordering) and the partial results shards return.
//!
//! Every role links this crate; ingester, querier and liaison all evaluate the
//! same plan, so a query gives the same answer wherever it runs.

mod aggregate;
mod criteria;
mod error;
mod exact_sum;
mod layout;
mod point;
mod query;
mod result;
mod schema;
mod series;
mod tags;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
/// Decoder property tests check allocation sizes (`testing::fuzz_decoder`).
#[cfg(test)]
#[global_allocator]
static ALLOC: testing::LargestAlloc = testing::LargestAlloc;
mod time;
mod value;
pub mod wire;

pub use aggregate::{AggFunction, AggState};
pub use criteria::{CRITERIA_DEPTH_MAX, Predicate};
pub use error::{ModelError, Result};
pub use exact_sum::ExactSum;
pub use layout::{ColumnLayout, LayoutMapping};
pub use point::{FieldVals, Point, PointRejection, VALUE_BYTES_MAX, field_heap_bytes, one_shard, tags_bytes, validate_batch};
pub use query::{Aggregation, GROUPS_MAX, LIMIT_DEFAULT, LIMIT_MAX, PINNED_SERIES_MAX, QueryPlan, Top, pinned_series};
pub use result::{GroupKey, PartialResult};
pub use schema::{GroupSpec, MeasureSchema, SHARD_NUM_MAX, check_group, check_measure, check_measure_update, check_name};
pub use series::{IdHasher, IdMap, IdState, SeriesId, SeriesMap, series_id, shard_of};
pub use tags::{Tags, TagsInterner};
pub use time::{INTERVAL_NANOS_MAX, interval_nanos, nanos_to_timestamp, now_nanos, timestamp_to_nanos};
pub use value::{FieldVal, TagVal};

/// Varint, zigzag and length-prefixed byte helpers shared by the WAL and the
/// part format.
pub mod codec {
    pub use crate::value::{put_bytes, put_varint, take_bytes, take_len, take_varint, unzigzag, zigzag};
}
