//! Shipping a compiled query to another role: the schema, request and
//! clock reading travel, and the receiver compiles the identical plan.

use std::sync::Arc;

use canopy_api::cluster::v1::QueryFragment;
use canopy_liaison::ApiError;
use canopy_model::{GroupSpec, MeasureSchema, QueryPlan};

/// The fragment of a plan.
pub fn fragment_of(plan: &QueryPlan) -> QueryFragment {
    QueryFragment {
        group: Some(plan.schema.group.proto.clone()),
        measure: Some(plan.schema.proto.clone()),
        request: Some(plan.request.clone()),
        now_nanos: plan.now,
    }
}

/// Compiles a received fragment back into the plan.
pub fn compile_fragment(f: &QueryFragment) -> Result<QueryPlan, ApiError> {
    let group = f.group.as_ref().ok_or_else(|| ApiError::invalid("fragment.group", "required"))?;
    let measure = f.measure.as_ref().ok_or_else(|| ApiError::invalid("fragment.measure", "required"))?;
    let request = f.request.as_ref().ok_or_else(|| ApiError::invalid("fragment.request", "required"))?;
    let spec = Arc::new(GroupSpec::compile(group)?);
    let schema = Arc::new(MeasureSchema::compile(spec, measure)?);
    Ok(QueryPlan::compile(schema, request, f.now_nanos)?)
}
