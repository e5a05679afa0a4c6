//! What one shard contributes to a query: the partial result that travels
//! from a leaf to the root (`canopy_querier::root` merges and shapes them).

use std::collections::HashMap;

use crate::aggregate::AggState;
use crate::point::Point;
use crate::value::TagVal;

/// Key of an aggregation group: bucket start and the group-by tag values.
pub type GroupKey = (i64, Vec<TagVal>);

/// What one shard contributes to a query.
#[derive(Debug, Clone)]
pub enum PartialResult {
    /// Raw points, already ordered and cut to what the merge can use.
    Raw(Vec<Point>),
    /// Aggregation states per group, one per aggregated field.
    Groups(HashMap<GroupKey, Vec<AggState>>),
}
