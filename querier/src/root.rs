//! The root of a query: fans the plan out to every shard's leaf, merges the
//! partial results (map-reduce: raw rows re-sorted and cut, aggregation
//! states merged per group) and shapes the answer (top-N, order,
//! offset/limit) into API data points. Standalone and cluster run it alike;
//! only how a leaf is reached differs.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::future::Future;

use canopy_api::v1::{DataPoint, Tag, TagFamily, data_point};
use canopy_model::{AggState, FieldVal, GROUPS_MAX, GroupKey, ModelError, PartialResult, Point, QueryPlan, TagVal, nanos_to_timestamp};

use crate::QueryError;

/// Runs `leaf(shard)` for every shard of the plan's group concurrently,
/// merges the partial results and returns the answer's data points.
pub async fn execute_root<F, Fut, E>(plan: &QueryPlan, leaf: F) -> Result<Vec<DataPoint>, E>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<PartialResult, E>>,
    E: From<QueryError>,
{
    let partials = futures::future::try_join_all((0..plan.schema.group.shard_num).map(leaf)).await?;
    let merged = merge_partials(plan, partials).map_err(QueryError::from)?;
    Ok(finish(plan, merged))
}

/// One shard's matching raw points, ordered and cut to what the merge can
/// use (`plan.keep()`).
pub fn raw_partial(plan: &QueryPlan, mut rows: Vec<Point>) -> PartialResult {
    sort_raw(plan, &mut rows);
    rows.truncate(plan.keep());
    PartialResult::Raw(rows)
}

/// Merges the partial results of all shards into one.
pub fn merge_partials(plan: &QueryPlan, parts: Vec<PartialResult>) -> Result<PartialResult, ModelError> {
    if plan.aggregation.is_none() {
        let mut rows: Vec<Point> = Vec::new();
        for p in parts {
            if let PartialResult::Raw(r) = p {
                rows.extend(r);
            }
        }
        sort_raw(plan, &mut rows);
        rows.truncate(plan.keep());
        return Ok(PartialResult::Raw(rows));
    }
    let mut groups: HashMap<GroupKey, Vec<AggState>> = HashMap::new();
    for p in parts {
        if let PartialResult::Groups(g) = p {
            for (k, s) in g {
                if groups.len() >= GROUPS_MAX && !groups.contains_key(&k) {
                    return Err(ModelError::ResourceExhausted(format!("more than {GROUPS_MAX} groups")));
                }
                match groups.get_mut(&k) {
                    Some(cur) => cur.iter_mut().zip(&s).for_each(|(a, b)| a.merge(b)),
                    None => {
                        groups.insert(k, s);
                    }
                }
            }
        }
    }
    Ok(PartialResult::Groups(groups))
}

fn cmp_field(a: &FieldVal, b: &FieldVal) -> Ordering {
    // Nulls rank last whatever the direction, so reverse only the non-null order.
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn ranked(desc: bool, a: &FieldVal, b: &FieldVal) -> Ordering {
    match (a.as_f64().is_some(), b.as_f64().is_some(), desc) {
        (true, true, true) => cmp_field(b, a),
        _ => cmp_field(a, b),
    }
}

fn sort_raw(plan: &QueryPlan, rows: &mut [Point]) {
    let by_time = |a: &Point, b: &Point| {
        let o = a.ts.cmp(&b.ts).then(a.series.cmp(&b.series));
        if plan.descending { o.reverse() } else { o }
    };
    match plan.top.as_ref().and_then(|t| t.field.map(|f| (f, t.descending))) {
        Some((f, desc)) => rows.sort_by(|a, b| ranked(desc, &a.fields[f], &b.fields[f]).then_with(|| by_time(a, b))),
        None => rows.sort_by(by_time),
    }
}

/// Shapes a merged result into the data points returned to the client.
pub fn finish(plan: &QueryPlan, merged: PartialResult) -> Vec<DataPoint> {
    let skip = plan.offset as usize;
    let take = plan.limit as usize;
    match merged {
        PartialResult::Raw(rows) => {
            let n = plan.top.as_ref().map_or(usize::MAX, |t| t.number as usize);
            rows.into_iter().take(n).skip(skip).take(take).map(|r| raw_point(plan, &r)).collect()
        }
        PartialResult::Groups(groups) => {
            let agg = plan.aggregation.as_ref().expect("groups come from an aggregation");
            let mut out: Vec<(GroupKey, Vec<FieldVal>)> =
                groups.into_iter().map(|(k, s)| (k, s.iter().map(|s| s.finish(agg.function)).collect())).collect();
            match &plan.top {
                Some(t) => {
                    out.sort_by(|a, b| ranked(t.descending, &a.1[0], &b.1[0]).then_with(|| a.0.cmp(&b.0)));
                    out.truncate(t.number as usize);
                }
                None => out.sort_by(|a, b| {
                    let o = a.0.0.cmp(&b.0.0);
                    (if plan.descending { o.reverse() } else { o }).then_with(|| a.0.1.cmp(&b.0.1))
                }),
            }
            let names: Vec<&String> = agg.fields.iter().map(|&f| &plan.schema.layout.fields[f].0).collect();
            out.into_iter()
                .skip(skip)
                .take(take)
                .map(|((bucket, tags), vals)| DataPoint {
                    timestamp: (agg.bucket_nanos > 0).then(|| nanos_to_timestamp(bucket)),
                    tag_families: families(plan, agg.group_tags.iter().copied().zip(tags)),
                    fields: names
                        .iter()
                        .zip(vals)
                        .map(|(n, v)| data_point::Field { name: (*n).clone(), value: Some(v.to_proto()) })
                        .collect(),
                    sid: 0,
                    version: 0,
                })
                .collect()
        }
    }
}

fn raw_point(plan: &QueryPlan, r: &Point) -> DataPoint {
    let layout = &plan.schema.layout;
    DataPoint {
        timestamp: Some(nanos_to_timestamp(r.ts)),
        tag_families: families(plan, plan.tags.iter().map(|&i| (i, r.tags[i].clone()))),
        fields: plan
            .fields
            .iter()
            .map(|&i| data_point::Field { name: layout.fields[i].0.clone(), value: Some(r.fields[i].to_proto()) })
            .collect(),
        sid: r.series,
        version: r.version,
    }
}

/// Groups tag values by family, keeping families in first-seen order.
fn families(plan: &QueryPlan, tags: impl Iterator<Item = (usize, TagVal)>) -> Vec<TagFamily> {
    let layout = &plan.schema.layout;
    let mut out: Vec<TagFamily> = Vec::new();
    for (i, v) in tags {
        let (family, name, _) = &layout.tags[i];
        let tag = Tag { key: name.clone(), value: Some(v.to_proto()) };
        match out.iter_mut().find(|f| &f.name == family) {
            Some(f) => f.tags.push(tag),
            None => out.push(TagFamily { name: family.clone(), tags: vec![tag] }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use canopy_api::v1::query_request::{Aggregation, GroupBy};
    use canopy_api::v1::{AggregationFunction, FieldType, QueryRequest, TagType, TimeRange};

    #[test]
    fn merging_past_the_group_limit_is_resource_exhausted() {
        let schema = Arc::new(canopy_model::testing::compile(
            &canopy_model::testing::group("g", 1, 1, 1),
            &canopy_model::testing::measure("g", "m", &[("s", TagType::Int)], &[("v", FieldType::Int)], &["s"]),
        ));
        let now = canopy_model::now_nanos();
        let req = QueryRequest {
            groups: vec!["g".into()],
            name: "m".into(),
            time_range: Some(TimeRange {
                begin: Some(canopy_model::nanos_to_timestamp(now - 1_000)),
                end: Some(canopy_model::nanos_to_timestamp(now)),
            }),
            group_by: Some(GroupBy { tag_projection: None, field_name: "v".into(), bucket_millis: 1 }),
            agg: Some(Aggregation { function: AggregationFunction::Count as i32, field_name: "v".into(), field_names: vec![] }),
            ..Default::default()
        };
        let plan = QueryPlan::compile(schema, &req, now).unwrap();
        // Two shards' partials of one-millisecond buckets: each within the
        // limit, together one group over it.
        let half = GROUPS_MAX as i64 / 2;
        let partial = |from: i64, n: i64| {
            PartialResult::Groups((from..from + n).map(|b| ((b * 1_000_000, Vec::new()), vec![AggState::default()])).collect())
        };
        let fits = merge_partials(&plan, vec![partial(0, half), partial(half, half)]).unwrap();
        assert!(matches!(&fits, PartialResult::Groups(g) if g.len() == GROUPS_MAX));
        let err = merge_partials(&plan, vec![partial(0, half), partial(half, half + 1)]).unwrap_err();
        assert!(matches!(&err, ModelError::ResourceExhausted(m) if m.contains(&GROUPS_MAX.to_string())), "{err:?}");
    }
}
