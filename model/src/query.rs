//! A query compiled against a measure schema: what to read, how to filter,
//! and how to shape the answer. Sources (memtables, parts) hand it rows of
//! one shard; it reduces them to a [`PartialResult`] that merges across shards.

use std::sync::Arc;

use canopy_api::v1::{BinaryOp, QueryRequest, Sort};

use crate::aggregate::AggFunction;
use crate::criteria::Predicate;
use crate::layout::ColumnLayout;
use crate::point::Point;
use crate::schema::MeasureSchema;
use crate::series::{SeriesId, series_id};
use crate::time::timestamp_to_nanos;
use crate::value::TagVal;
use crate::{ModelError, Result};

/// Rows returned when a query sets no limit.
pub const LIMIT_DEFAULT: u32 = 100;
/// Most rows one query may return (offset + limit).
pub const LIMIT_MAX: u32 = 100_000;
/// Most groups one aggregation may hold; more is an error, not an OOM.
pub const GROUPS_MAX: usize = 1_000_000;

/// A compiled query over one measure.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    pub schema: Arc<MeasureSchema>,
    /// Inclusive start, nanoseconds; already clamped to the group's TTL.
    pub begin: i64,
    /// Exclusive end, nanoseconds.
    pub end: i64,
    pub predicate: Predicate,
    /// Tags returned with raw points, as layout indices.
    pub tags: Vec<usize>,
    /// Fields returned with raw points, as layout indices.
    pub fields: Vec<usize>,
    pub aggregation: Option<Aggregation>,
    pub top: Option<Top>,
    /// Order of raw points (or buckets) by timestamp.
    pub descending: bool,
    pub offset: u32,
    pub limit: u32,
    /// Sorted series ids the criteria restrict the query to, when they pin
    /// every entity tag (see [`pinned_series`]); sources skip other series.
    pub series: Option<Vec<SeriesId>>,
    /// See [`QueryPlan::pushdown_safe`]; decided once at compile time
    /// because sources ask for every row.
    pushdown: bool,
    /// The request and clock reading this plan was compiled from, so
    /// another role can compile the identical plan.
    pub request: QueryRequest,
    pub now: i64,
}

/// Most series a query's criteria may pin for series-level pruning; beyond
/// this the query just scans.
pub const PINNED_SERIES_MAX: usize = 256;

/// Per tag, the values AND-ed `EQ` / `IN` conditions restrict it to
/// (`None`: unrestricted). OR and negative conditions narrow nothing.
fn conjunct_values(predicate: &Predicate, tags: usize) -> Vec<Option<Vec<TagVal>>> {
    fn walk(p: &Predicate, cands: &mut Vec<Option<Vec<TagVal>>>) {
        match p {
            Predicate::And(a, b) => {
                walk(a, cands);
                walk(b, cands);
            }
            Predicate::Cmp { tag, op, value } if matches!(op, BinaryOp::Eq | BinaryOp::In) => {
                let vals: Vec<TagVal> = match (op, value) {
                    (BinaryOp::In, TagVal::StrArray(a)) => a.iter().cloned().map(TagVal::Str).collect(),
                    (BinaryOp::In, TagVal::IntArray(a)) => a.iter().copied().map(TagVal::Int).collect(),
                    (BinaryOp::Eq, v) => vec![v.clone()],
                    _ => return,
                };
                let slot = &mut cands[*tag];
                *slot = Some(match slot.take() {
                    None => vals,
                    Some(mut cur) => {
                        cur.retain(|v| vals.contains(v));
                        cur
                    }
                });
            }
            _ => {}
        }
    }
    let mut cands = vec![None; tags];
    walk(predicate, &mut cands);
    cands
}

/// The series ids a predicate allows, if AND-ed `EQ` / `IN` conditions pin
/// every entity tag to a few values. `None` means "any series".
pub fn pinned_series(schema: &MeasureSchema, predicate: &Predicate) -> Option<Vec<SeriesId>> {
    let cands = conjunct_values(predicate, schema.layout.tags.len());
    let mut combos: Vec<Vec<TagVal>> = vec![Vec::new()];
    for &e in &schema.entity {
        let vals = cands[e].as_ref()?;
        if combos.len() * vals.len() > PINNED_SERIES_MAX {
            return None;
        }
        combos = combos.iter().flat_map(|c| vals.iter().map(move |v| [c.clone(), vec![v.clone()]].concat())).collect();
    }
    let mut ids: Vec<SeriesId> = combos.iter().map(|c| series_id(&schema.name, c.iter())).collect();
    ids.sort_unstable();
    ids.dedup();
    Some(ids)
}

/// True if every version of a point has the same values for these tags:
/// entity tags always, any tag when the measure's tags follow its entity.
fn shared_by_versions(schema: &MeasureSchema, tags: &[usize]) -> bool {
    schema.proto.tags_follow_entity || tags.iter().all(|t| schema.entity.contains(t))
}

fn pushdown_safe(schema: &MeasureSchema, predicate: &Predicate) -> bool {
    let mut used = Vec::new();
    predicate.tags_used(&mut used);
    let mut fields = Vec::new();
    predicate.fields_used(&mut fields);
    fields.is_empty() && shared_by_versions(schema, &used)
}

/// Group-by plus aggregation of one or more fields (one function).
#[derive(Debug, Clone)]
pub struct Aggregation {
    pub function: AggFunction,
    /// Aggregated fields; top-N ranks by the first.
    pub fields: Vec<usize>,
    pub group_tags: Vec<usize>,
    /// Bucket width in nanoseconds; 0 means a single bucket.
    pub bucket_nanos: i64,
}

/// Keep the N rows (or groups) with the highest or lowest field value.
#[derive(Debug, Clone)]
pub struct Top {
    pub number: u32,
    /// Field to rank raw rows by; aggregated queries rank by the aggregate.
    pub field: Option<usize>,
    pub descending: bool,
}

impl QueryPlan {
    /// Compiles and validates a request; `now` clamps the range to the TTL.
    pub fn compile(schema: Arc<MeasureSchema>, req: &QueryRequest, now: i64) -> Result<QueryPlan> {
        let layout: &ColumnLayout = &schema.layout;
        let range = req.time_range.as_ref().ok_or_else(|| ModelError::invalid("time_range", "required"))?;
        let begin = range.begin.as_ref().ok_or_else(|| ModelError::invalid("time_range.begin", "required"))?;
        let end = range.end.as_ref().ok_or_else(|| ModelError::invalid("time_range.end", "required"))?;
        let (begin, end) = (timestamp_to_nanos(begin, "time_range.begin")?, timestamp_to_nanos(end, "time_range.end")?);
        if begin >= end {
            return Err(ModelError::invalid("time_range", "begin must be before end"));
        }
        let begin = begin.max(now.saturating_sub(schema.group.ttl_nanos));
        let predicate = Predicate::compile(req.criteria.as_ref(), layout)?;

        let mut tags = Vec::new();
        for (fi, fam) in req.tag_projection.iter().flat_map(|p| p.tag_families.iter()).enumerate() {
            for (ti, name) in fam.tags.iter().enumerate() {
                let i = layout.tag_index(name).ok_or_else(|| {
                    ModelError::invalid(format!("tag_projection.tag_families[{fi}].tags[{ti}]"), format!("unknown tag {name:?}"))
                })?;
                tags.push(i);
            }
        }
        let mut fields = Vec::new();
        for (i, name) in req.field_projection.iter().flat_map(|p| p.names.iter()).enumerate() {
            let f = layout
                .field_index(name)
                .ok_or_else(|| ModelError::invalid(format!("field_projection.names[{i}]"), format!("unknown field {name:?}")))?;
            fields.push(f);
        }

        let aggregation = compile_aggregation(req, layout)?;
        let top = match &req.top {
            Some(t) if t.number > 0 => Some(Top {
                number: t.number as u32,
                field: match (&aggregation, t.field_name.as_str()) {
                    (Some(_), _) => None,
                    (None, "") => {
                        return Err(ModelError::invalid("top.field_name", "required without an aggregation"));
                    }
                    (None, name) => Some(
                        layout.field_index(name).ok_or_else(|| ModelError::invalid("top.field_name", format!("unknown field {name:?}")))?,
                    ),
                },
                descending: Sort::try_from(t.field_value_sort) != Ok(Sort::Asc),
            }),
            Some(t) if t.number < 0 => {
                return Err(ModelError::invalid("top.number", "must not be negative"));
            }
            _ => None,
        };
        let limit = if req.limit == 0 { LIMIT_DEFAULT } else { req.limit };
        if req.offset as u64 + limit as u64 > LIMIT_MAX as u64 {
            return Err(ModelError::invalid("limit", format!("offset + limit must be at most {LIMIT_MAX}")));
        }
        let descending = req.order_by.as_ref().is_some_and(|o| Sort::try_from(o.sort) == Ok(Sort::Desc));
        let series = pinned_series(&schema, &predicate);
        let pushdown = pushdown_safe(&schema, &predicate);
        Ok(QueryPlan {
            schema,
            begin,
            end,
            predicate,
            tags,
            fields,
            aggregation,
            top,
            descending,
            offset: req.offset,
            limit,
            series,
            pushdown,
            request: req.clone(),
            now,
        })
    }

    /// Rows a single shard must keep for the final answer: enough to serve
    /// offset + limit after the merge (or the top N).
    pub fn keep(&self) -> usize {
        let n = self.offset as usize + self.limit as usize;
        match &self.top {
            Some(t) => n.max(t.number as usize),
            None => n,
        }
    }

    /// True if the criteria read only entity tags (or the measure's tags
    /// follow its entity) and no fields. Only then may sources filter before
    /// deduplication: versions of one (series, ts) share their entity tags,
    /// but other tags and fields may differ between an old and a new version.
    pub fn pushdown_safe(&self) -> bool {
        self.pushdown
    }

    /// A tag-only predicate sources may use to skip whole blocks before
    /// deduplication, with the tags it reads: the tag conjuncts of the
    /// criteria, when all versions of a point share those tags (entity tags,
    /// or measures whose tags follow the entity). `None` if nothing applies.
    pub fn block_predicate(&self) -> Option<(Predicate, Vec<usize>)> {
        let p = self.predicate.tag_conjuncts();
        let mut used = Vec::new();
        p.tags_used(&mut used);
        (!used.is_empty() && shared_by_versions(&self.schema, &used)).then_some((p, used))
    }

    /// The AND-ed `EQ` / `IN` conditions on tags that every version of a
    /// point shares, as (tag, allowed values): what a part's series index
    /// may resolve to series before deduplication. Empty if none apply.
    pub fn index_conditions(&self) -> Vec<(usize, Vec<TagVal>)> {
        conjunct_values(&self.predicate, self.schema.layout.tags.len())
            .into_iter()
            .enumerate()
            .filter_map(|(t, v)| v.map(|v| (t, v)))
            .filter(|(t, _)| shared_by_versions(&self.schema, &[*t]))
            .collect()
    }

    /// True if every version of a point has the same values for `tags`.
    pub fn shares_tags(&self, tags: &[usize]) -> bool {
        shared_by_versions(&self.schema, tags)
    }

    /// The filter a source (memtable, part) applies before deduplication.
    pub fn source_filter(&self, p: &Point) -> bool {
        p.ts >= self.begin
            && p.ts < self.end
            && self.series_allowed(p.series)
            && (!self.pushdown_safe() || self.predicate.eval(&p.tags, &p.fields))
    }

    /// Which target tags and fields the query reads (criteria, projections,
    /// grouping, aggregation, ranking); the others need not be decoded.
    pub fn needed_columns(&self) -> (Vec<bool>, Vec<bool>) {
        let layout = &self.schema.layout;
        let mut tags = vec![false; layout.tags.len()];
        let mut fields = vec![false; layout.fields.len()];
        let mut used = Vec::new();
        self.predicate.tags_used(&mut used);
        used.extend(&self.tags);
        if let Some(a) = &self.aggregation {
            used.extend(&a.group_tags);
            for &f in &a.fields {
                fields[f] = true;
            }
        }
        let mut in_criteria = Vec::new();
        self.predicate.fields_used(&mut in_criteria);
        for f in in_criteria {
            fields[f] = true;
        }
        for t in used {
            tags[t] = true;
        }
        for &f in self.fields.iter().chain(self.top.as_ref().and_then(|t| t.field.as_ref())) {
            fields[f] = true;
        }
        (tags, fields)
    }

    /// False if the criteria rule this series out.
    pub fn series_allowed(&self, series: SeriesId) -> bool {
        self.series.as_ref().is_none_or(|s| s.binary_search(&series).is_ok())
    }
}

fn compile_aggregation(req: &QueryRequest, layout: &ColumnLayout) -> Result<Option<Aggregation>> {
    let Some(agg) = &req.agg else {
        if req.group_by.is_some() {
            return Err(ModelError::invalid("agg", "group_by needs an aggregation"));
        }
        return Ok(None);
    };
    let function = AggFunction::from_proto(agg.function)
        .ok_or_else(|| ModelError::invalid("agg.function", "an AGGREGATION_FUNCTION_* value is required"))?;
    let mut fields = Vec::new();
    let names = std::iter::once(("agg.field_name".to_string(), &agg.field_name))
        .filter(|(_, n)| !n.is_empty())
        .chain(agg.field_names.iter().enumerate().map(|(i, n)| (format!("agg.field_names[{i}]"), n)));
    for (path, name) in names {
        let f = layout.field_index(name).ok_or_else(|| ModelError::invalid(path, format!("unknown field {name:?}")))?;
        if !fields.contains(&f) {
            fields.push(f);
        }
    }
    if fields.is_empty() {
        return Err(ModelError::invalid("agg.field_name", "a field to aggregate is required"));
    }
    let mut group_tags = Vec::new();
    let mut bucket_nanos = 0;
    if let Some(g) = &req.group_by {
        for (fi, fam) in g.tag_projection.iter().flat_map(|p| p.tag_families.iter()).enumerate() {
            for (ti, name) in fam.tags.iter().enumerate() {
                group_tags.push(layout.tag_index(name).ok_or_else(|| {
                    ModelError::invalid(format!("group_by.tag_projection.tag_families[{fi}].tags[{ti}]"), format!("unknown tag {name:?}"))
                })?);
            }
        }
        if g.bucket_millis < 0 {
            return Err(ModelError::invalid("group_by.bucket_millis", "must not be negative"));
        }
        bucket_nanos = g.bucket_millis.checked_mul(1_000_000).ok_or_else(|| ModelError::invalid("group_by.bucket_millis", "too large"))?;
    }
    Ok(Some(Aggregation { function, fields, group_tags, bucket_nanos }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api::v1::*;

    fn schema() -> MeasureSchema {
        crate::testing::compile(
            &crate::testing::group("g", 1, 1, 1),
            &crate::testing::measure(
                "g",
                "m",
                &[("svc", TagType::String), ("inst", TagType::Int), ("zone", TagType::String)],
                &[],
                &["svc", "inst"],
            ),
        )
    }

    fn cmp(tag: usize, op: BinaryOp, value: TagVal) -> Predicate {
        Predicate::Cmp { tag, op, value }
    }

    fn and(a: Predicate, b: Predicate) -> Predicate {
        Predicate::And(Box::new(a), Box::new(b))
    }

    #[test]
    fn pins_series_only_when_every_entity_tag_is_fixed_by_and() {
        let s = schema();
        let svc = cmp(0, BinaryOp::Eq, TagVal::Str("a".into()));
        let insts = cmp(1, BinaryOp::In, TagVal::IntArray(vec![1, 2]));
        let zone = cmp(2, BinaryOp::Eq, TagVal::Str("z".into()));
        let ids = pinned_series(&s, &and(and(svc.clone(), zone.clone()), insts.clone())).unwrap();
        let mut want =
            vec![series_id("m", &[TagVal::Str("a".into()), TagVal::Int(1)]), series_id("m", &[TagVal::Str("a".into()), TagVal::Int(2)])];
        want.sort_unstable();
        assert_eq!(ids, want);
        assert_eq!(pinned_series(&s, &and(svc.clone(), zone.clone())), None, "inst is not fixed");
        assert_eq!(pinned_series(&s, &Predicate::Or(Box::new(svc.clone()), Box::new(insts.clone()))), None);
        let contradiction = and(and(svc, cmp(0, BinaryOp::Eq, TagVal::Str("b".into()))), insts);
        assert_eq!(pinned_series(&s, &contradiction), Some(vec![]), "a = a AND a = b matches nothing");
    }
}
