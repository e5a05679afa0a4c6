//! Validation of written data points against a measure schema.

use canopy_api::v1::{DataPointValue, FieldType, TagType};

use crate::layout::LayoutMapping;
use crate::schema::MeasureSchema;
use crate::series::{SeriesId, series_id, shard_of};
use crate::tags::Tags;
use crate::time::timestamp_to_nanos;
use crate::value::{FieldVal, TagVal};

/// Largest tag or field value accepted, in bytes; bigger values are rejected
/// so one point cannot blow a memtable's budget.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

/// A point's field values in its layout's order. Inline up to one value:
/// most points (every Prometheus and OTLP sample) carry one field, and a
/// heap allocation per point cost more than the point's other work.
pub type FieldVals = smallvec::SmallVec<[FieldVal; 1]>;

/// A validated point, with its values in the schema's column layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub series: SeriesId,
    pub shard: u32,
    pub ts: i64,
    pub version: i64,
    pub tags: Tags,
    pub fields: FieldVals,
}

impl Point {
    /// The point with its columns rearranged by `m` (missing ones null).
    pub fn remap(&self, m: &LayoutMapping) -> Point {
        Point {
            tags: m.tags.iter().map(|s| s.map(|i| self.tags[i].clone()).unwrap_or_default()).collect(),
            fields: m.fields.iter().map(|s| s.map(|i| self.fields[i].clone()).unwrap_or_default()).collect(),
            ..*self
        }
    }

    /// In-memory size of the point without its (shared) tag values, including
    /// allocator overhead, for memtable budgets (measured against RSS: heap
    /// values cost their length plus ~16 bytes). [`Point::tags_bytes`] is
    /// charged once per series.
    pub fn approx_bytes(&self) -> usize {
        let fields: usize = self.fields.iter().map(field_heap_bytes).sum();
        size_of::<Point>() + heap(self.fields.len() * size_of::<FieldVal>()) + fields
    }

    /// In-memory size of the point's tag values (shared by its series).
    pub fn tags_bytes(&self) -> usize {
        tags_bytes(&self.tags)
    }
}

/// The shard every point of `points` belongs to, if they share one (an
/// empty batch has none): a batch of one shard needs no regrouping.
pub fn one_shard(points: &[Point]) -> Option<u32> {
    let first = points.first()?.shard;
    points.iter().all(|p| p.shard == first).then_some(first)
}

/// Heap bytes a field value holds beyond its own slot (a string's or
/// binary's allocation, allocator overhead included), for memory budgets.
pub fn field_heap_bytes(f: &FieldVal) -> usize {
    match f {
        FieldVal::Str(s) => heap(s.len()),
        FieldVal::Binary(b) => heap(b.len()),
        _ => 0,
    }
}

/// In-memory size of a series' shared tag values ([`Tags`]), allocator
/// overhead included.
pub fn tags_bytes(tags: &[TagVal]) -> usize {
    let values: usize = tags
        .iter()
        .map(|t| {
            size_of::<TagVal>()
                + match t {
                    TagVal::Str(s) => heap(s.len()),
                    TagVal::Binary(b) => heap(b.len()),
                    TagVal::StrArray(a) => heap(a.len() * 24) + a.iter().map(|s| heap(s.len())).sum::<usize>(),
                    TagVal::IntArray(a) => heap(a.len() * 8),
                    TagVal::Null | TagVal::Int(_) => 0,
                }
        })
        .sum();
    // The Arc's counts, then the values.
    heap(16 + values)
}

/// A heap allocation of `n` bytes as RSS sees it.
fn heap(n: usize) -> usize {
    if n == 0 { 0 } else { n.next_multiple_of(16) + 16 }
}

fn tag_bytes(t: &TagVal) -> usize {
    16 + match t {
        TagVal::Str(s) => s.len(),
        TagVal::Binary(b) => b.len(),
        TagVal::StrArray(a) => a.iter().map(|s| s.len() + 24).sum(),
        TagVal::IntArray(a) => a.len() * 8,
        TagVal::Null | TagVal::Int(_) => 0,
    }
}

fn field_bytes(f: &FieldVal) -> usize {
    16 + match f {
        FieldVal::Str(s) => s.len(),
        FieldVal::Binary(b) => b.len(),
        _ => 0,
    }
}

/// Why one point of a batch was rejected; `field` names the offending path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointRejection {
    pub index: u32,
    pub field: String,
    pub message: String,
}

/// Validates each point of a batch on its own: valid points are returned for
/// storage, invalid ones are reported and never affect the others.
pub fn validate_batch(schema: &MeasureSchema, points: &[DataPointValue], now_nanos: i64) -> (Vec<Point>, Vec<PointRejection>) {
    let mut ok = Vec::with_capacity(points.len());
    let mut rejected = Vec::new();
    for (i, p) in points.iter().enumerate() {
        match validate_point(schema, p, now_nanos) {
            Ok(point) => ok.push(point),
            Err((field, message)) => rejected.push(PointRejection { index: i as u32, field: format!("data_points[{i}]{field}"), message }),
        }
    }
    (ok, rejected)
}

type Rejection = (String, String);

fn validate_point(schema: &MeasureSchema, p: &DataPointValue, now: i64) -> Result<Point, Rejection> {
    let ts_pb = p.timestamp.as_ref().ok_or_else(|| (".timestamp".to_string(), "required".to_string()))?;
    let ts = timestamp_to_nanos(ts_pb, ".timestamp").map_err(|e| (".timestamp".to_string(), e.to_string()))?;
    let oldest = now.saturating_sub(schema.group.ttl_nanos);
    if ts < oldest {
        return Err((
            ".timestamp".into(),
            format!("timestamp {ts}ns is outside the TTL of group {:?} (older than {oldest}ns)", schema.group.name),
        ));
    }
    let tags = validate_tags(schema, p)?;
    let fields = validate_fields(schema, p)?;
    let series = series_id(&schema.name, schema.entity.iter().map(|&i| &tags[i]));
    Ok(Point { series, shard: shard_of(series, schema.group.shard_num), ts, version: p.version, tags: tags.into(), fields })
}

fn validate_tags(schema: &MeasureSchema, p: &DataPointValue) -> Result<Vec<TagVal>, Rejection> {
    let families = &schema.proto.tag_families;
    if p.tag_families.len() > families.len() {
        return Err((".tag_families".into(), format!("{} families given, the measure has {}", p.tag_families.len(), families.len())));
    }
    let mut tags = Vec::with_capacity(schema.layout.tags.len());
    for (fi, fam) in families.iter().enumerate() {
        let given = p.tag_families.get(fi).map(|f| f.tags.as_slice()).unwrap_or_default();
        if given.len() > fam.tags.len() {
            return Err((
                format!(".tag_families[{fi}]"),
                format!("{} tags given, family {:?} has {}", given.len(), fam.name, fam.tags.len()),
            ));
        }
        for (ti, spec) in fam.tags.iter().enumerate() {
            let v = given.get(ti).map(TagVal::from_proto).unwrap_or_default();
            let path = || format!(".tag_families[{fi}].tags[{ti}] ({})", spec.name);
            let ty = TagType::try_from(spec.r#type).unwrap_or(TagType::Unspecified);
            let fits = matches!(
                (ty, &v),
                (_, TagVal::Null)
                    | (TagType::String, TagVal::Str(_))
                    | (TagType::Int, TagVal::Int(_))
                    | (TagType::StringArray, TagVal::StrArray(_))
                    | (TagType::IntArray, TagVal::IntArray(_))
                    | (TagType::DataBinary, TagVal::Binary(_))
            );
            if !fits {
                return Err((path(), format!("expected {}, got {}", ty.as_str_name(), v.type_name())));
            }
            if tag_bytes(&v) > VALUE_BYTES_MAX {
                return Err((path(), format!("value longer than {VALUE_BYTES_MAX} bytes")));
            }
            tags.push(v);
        }
    }
    for &i in &schema.entity {
        if tags[i] == TagVal::Null {
            let name = &schema.layout.tags[i].1;
            return Err((format!(".tag_families ({name})"), format!("entity tag {name:?} is required")));
        }
    }
    Ok(tags)
}

fn validate_fields(schema: &MeasureSchema, p: &DataPointValue) -> Result<FieldVals, Rejection> {
    let specs = &schema.proto.fields;
    if p.fields.len() > specs.len() {
        return Err((".fields".into(), format!("{} fields given, the measure has {}", p.fields.len(), specs.len())));
    }
    let mut fields = FieldVals::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let v = p.fields.get(i).map(FieldVal::from_proto).unwrap_or_default();
        let ty = FieldType::try_from(spec.field_type).unwrap_or(FieldType::Unspecified);
        let v = match (ty, v) {
            // An integer is a valid float; JSON clients often drop the ".0".
            (FieldType::Float, FieldVal::Int(n)) => FieldVal::Float(n as f64),
            (_, FieldVal::Null) => FieldVal::Null,
            (FieldType::Float, v @ FieldVal::Float(_))
            | (FieldType::Int, v @ FieldVal::Int(_))
            | (FieldType::String, v @ FieldVal::Str(_))
            | (FieldType::DataBinary, v @ FieldVal::Binary(_))
            | (FieldType::Bool, v @ FieldVal::Bool(_)) => v,
            (ty, v) => {
                return Err((format!(".fields[{i}] ({})", spec.name), format!("expected {}, got {}", ty.as_str_name(), v.type_name())));
            }
        };
        if field_bytes(&v) > VALUE_BYTES_MAX {
            return Err((format!(".fields[{i}] ({})", spec.name), format!("value longer than {VALUE_BYTES_MAX} bytes")));
        }
        fields.push(v);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use canopy_api::v1::*;

    use super::*;

    #[test]
    fn a_batch_has_one_shard_only_when_every_point_shares_it() {
        let at = |shard| Point { series: 1, shard, ts: 0, version: 0, tags: vec![].into(), fields: FieldVals::new() };
        assert_eq!(one_shard(&[]), None);
        assert_eq!(one_shard(&[at(3), at(3)]), Some(3));
        assert_eq!(one_shard(&[at(3), at(3), at(1)]), None);
    }

    fn schema() -> MeasureSchema {
        crate::testing::compile(
            &crate::testing::group("g", 4, 1, 1),
            &crate::testing::measure("g", "m", &[("host", TagType::String), ("port", TagType::Int)], &[("v", FieldType::Float)], &["host"]),
        )
    }

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn dp(host: Option<&str>, field: field_value::Value, ts: i64) -> DataPointValue {
        let host = host.map(|h| TagVal::Str(h.into()).to_proto()).unwrap_or_default();
        DataPointValue {
            timestamp: Some(crate::nanos_to_timestamp(ts)),
            tag_families: vec![TagFamilyForWrite { tags: vec![host] }],
            fields: vec![FieldValue { value: Some(field) }],
            version: 0,
        }
    }

    #[test]
    fn valid_points_pass_and_each_bad_point_is_named() {
        let s = schema();
        let ok = dp(Some("a"), field_value::Value::Int(Int { value: 3 }), NOW);
        let bad_type = dp(Some("a"), field_value::Value::Str(Str { value: "x".into() }), NOW);
        let no_entity = dp(None, field_value::Value::Float(Float { value: 1.0 }), NOW);
        let too_old = dp(Some("a"), field_value::Value::Float(Float { value: 1.0 }), NOW - 2 * 86_400_000_000_000);
        let (points, rejected) = validate_batch(&s, &[ok, bad_type, no_entity, too_old], NOW);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].fields.to_vec(), vec![FieldVal::Float(3.0)], "an int is accepted for a float field");
        assert_eq!(points[0].tags, vec![TagVal::Str("a".into()), TagVal::Null].into(), "omitted trailing tags are null");
        assert_eq!(points[0].shard, shard_of(points[0].series, 4));
        let fields: Vec<_> = rejected.iter().map(|r| (r.index, r.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![(1, "data_points[1].fields[0] (v)"), (2, "data_points[2].tag_families (host)"), (3, "data_points[3].timestamp"),]
        );
        assert!(rejected[2].message.contains("TTL"));
    }

    #[test]
    fn too_many_values_are_rejected() {
        let s = schema();
        let mut p = dp(Some("a"), field_value::Value::Float(Float { value: 1.0 }), NOW);
        p.fields.push(p.fields[0].clone());
        let (_, rejected) = validate_batch(&s, &[p], NOW);
        assert!(rejected[0].message.contains("2 fields given"), "{rejected:?}");
    }

    /// The JSON API's bodies, damaged: refused by the parser, or parsed and
    /// then refused (or accepted) by validation and planning — never a panic.
    #[test]
    fn damaged_json_requests_are_refused_without_panic() {
        use crate::testing::fuzz_decoder;
        let s = std::sync::Arc::new(schema());
        let write = WriteRequest {
            metadata: Some(Metadata { group: "g".into(), name: "m".into(), mod_revision: 0 }),
            data_points: vec![
                dp(Some("a"), field_value::Value::Float(Float { value: 1.5 }), NOW),
                dp(Some("b"), field_value::Value::Int(Int { value: -3 }), NOW - 1),
            ],
            message_id: 7,
        };
        fuzz_decoder("JSON write", &[serde_json::to_vec(&write).unwrap()], 10_000, |b| {
            serde_json::from_slice::<WriteRequest>(b).map(|r| validate_batch(&s, &r.data_points, NOW).1.len())
        });
        let cond = |name: &str, op: BinaryOp, v: TagValue| Criteria {
            exp: Some(criteria::Exp::Condition(Condition { name: name.into(), op: op as i32, value: Some(v), ..Default::default() })),
        };
        let query = QueryRequest {
            groups: vec!["g".into()],
            name: "m".into(),
            time_range: Some(TimeRange {
                begin: Some(crate::nanos_to_timestamp(NOW - 3_600_000_000_000)),
                end: Some(crate::nanos_to_timestamp(NOW)),
            }),
            criteria: Some(Criteria {
                exp: Some(criteria::Exp::Le(Box::new(LogicalExpression {
                    op: logical_expression::LogicalOp::And as i32,
                    left: Some(Box::new(cond("host", BinaryOp::Eq, TagVal::Str("a".into()).to_proto()))),
                    right: Some(Box::new(cond("port", BinaryOp::Gt, TagVal::Int(80).to_proto()))),
                }))),
            }),
            group_by: Some(query_request::GroupBy {
                tag_projection: Some(TagProjection {
                    tag_families: vec![tag_projection::TagFamily { name: "d".into(), tags: vec!["host".into()] }],
                }),
                field_name: "v".into(),
                bucket_millis: 60_000,
            }),
            agg: Some(query_request::Aggregation {
                function: AggregationFunction::Max as i32,
                field_name: "v".into(),
                field_names: vec![],
            }),
            limit: 10,
            ..Default::default()
        };
        // The undamaged requests reach validation and planning and pass.
        assert!(validate_batch(&s, &write.data_points, NOW).1.is_empty());
        crate::QueryPlan::compile(s.clone(), &query, NOW).expect("the undamaged query plans");
        fuzz_decoder("JSON query", &[serde_json::to_vec(&query).unwrap()], 10_000, |b| {
            serde_json::from_slice::<QueryRequest>(b).map(|r| crate::QueryPlan::compile(s.clone(), &r, NOW).is_ok())
        });
    }
}
