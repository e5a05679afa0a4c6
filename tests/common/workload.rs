//! Test data: the schema, deterministic points, an oracle of what was
//! acknowledged, and brute-force answers to compare query results with.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use canopy_api::Timestamp;
use canopy_api::v1::query_request::Aggregation;
use canopy_api::v1::*;

use super::client::Http;

pub const GROUP: &str = "g";
pub const MEASURE: &str = "cpu";
pub const HOUR: i64 = 3_600_000_000_000;

/// One point as the test knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub host: String,
    pub region: String,
    pub zone: String,
    pub ts: i64,
    pub version: i64,
    pub usage: f64,
    pub count: i64,
}

pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

pub fn ts(n: i64) -> Timestamp {
    Timestamp { seconds: n.div_euclid(1_000_000_000), nanos: n.rem_euclid(1_000_000_000) as i32 }
}

fn str_tag(s: &str) -> TagValue {
    TagValue { value: Some(tag_value::Value::Str(Str { value: s.into() })) }
}

/// Creates group `g` (3 shards, 1-hour segments, 7-day TTL) and measure `cpu`.
pub async fn create_schema(http: &Http) {
    create_schema_with_shards(http, 3).await
}

/// [`create_schema`] with a group of `shards` shards.
pub async fn create_schema_with_shards(http: &Http, shards: u32) {
    let group = serde_json::json!({"group": {
        "metadata": {"name": GROUP},
        "catalog": "CATALOG_MEASURE",
        "resourceOpts": {"shardNum": shards, "segmentInterval": {"unit": "UNIT_HOUR", "num": 1}, "ttl": {"unit": "UNIT_DAY", "num": 7}}
    }});
    let (s, b) = http.post("/api/v1/group/schema", &group).await;
    assert_eq!(s, 200, "{b}");
    let measure = serde_json::json!({"measure": {
        "metadata": {"group": GROUP, "name": MEASURE},
        "tagFamilies": [
            {"name": "default", "tags": [{"name": "host", "type": "TAG_TYPE_STRING"}, {"name": "region", "type": "TAG_TYPE_STRING"}]},
            {"name": "extra", "tags": [{"name": "zone", "type": "TAG_TYPE_STRING"}]}
        ],
        "fields": [{"name": "usage", "fieldType": "FIELD_TYPE_FLOAT"}, {"name": "count", "fieldType": "FIELD_TYPE_INT"}],
        "entity": {"tagNames": ["host"]},
        "interval": "10s"
    }});
    let (s, b) = http.post("/api/v1/measure/schema", &measure).await;
    assert_eq!(s, 200, "{b}");
}

/// `hosts` series × `per_host` points, `step` ns apart from `start`, so
/// they can span several 1-hour segments; values come from a seeded LCG.
pub fn samples(hosts: usize, per_host: usize, start: i64, step: i64, seed: u64) -> Vec<Sample> {
    let mut out = Vec::with_capacity(hosts * per_host);
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    for i in 0..per_host {
        for h in 0..hosts {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            out.push(Sample {
                host: format!("host-{h:03}"),
                region: ["eu", "us", "ap"][h % 3].into(),
                zone: format!("z{}", (h + i) % 4),
                ts: start + i as i64 * step,
                version: 0,
                usage: (x >> 11) as f64 / (1u64 << 53) as f64 * 100.0,
                count: (x % 1000) as i64,
            });
        }
    }
    out
}

pub fn point(s: &Sample) -> DataPointValue {
    DataPointValue {
        timestamp: Some(ts(s.ts)),
        tag_families: vec![
            TagFamilyForWrite { tags: vec![str_tag(&s.host), str_tag(&s.region)] },
            TagFamilyForWrite { tags: vec![str_tag(&s.zone)] },
        ],
        fields: vec![
            FieldValue { value: Some(field_value::Value::Float(Float { value: s.usage })) },
            FieldValue { value: Some(field_value::Value::Int(Int { value: s.count })) },
        ],
        version: s.version,
    }
}

pub fn write_request(samples: &[Sample], message_id: u64) -> WriteRequest {
    WriteRequest {
        metadata: Some(Metadata { group: GROUP.into(), name: MEASURE.into(), mod_revision: 0 }),
        data_points: samples.iter().map(point).collect(),
        message_id,
    }
}

/// What the database must return: per (host, ts) the highest version, and
/// the later write among equal versions.
#[derive(Debug, Default, Clone)]
pub struct Oracle {
    pub rows: BTreeMap<(String, i64), Sample>,
}

impl Oracle {
    pub fn add(&mut self, s: &Sample) {
        let key = (s.host.clone(), s.ts);
        match self.rows.get(&key) {
            Some(old) if old.version > s.version => {}
            _ => {
                self.rows.insert(key, s.clone());
            }
        }
    }
}

pub fn time_range(begin: i64, end: i64) -> Option<TimeRange> {
    Some(TimeRange { begin: Some(ts(begin)), end: Some(ts(end)) })
}

pub fn cond(name: &str, op: BinaryOp, value: TagValue) -> Criteria {
    Criteria { exp: Some(criteria::Exp::Condition(Condition { name: name.into(), op: op as i32, value: Some(value), field_value: None })) }
}

pub fn logical(op: logical_expression::LogicalOp, l: Criteria, r: Criteria) -> Criteria {
    Criteria {
        exp: Some(criteria::Exp::Le(Box::new(LogicalExpression { op: op as i32, left: Some(Box::new(l)), right: Some(Box::new(r)) }))),
    }
}

pub fn tag_str(s: &str) -> TagValue {
    str_tag(s)
}

pub fn tag_strs(v: &[&str]) -> TagValue {
    TagValue { value: Some(tag_value::Value::StrArray(StrArray { value: v.iter().map(|s| s.to_string()).collect() })) }
}

pub fn projection(family: &str, tags: &[&str]) -> TagProjection {
    TagProjection {
        tag_families: vec![tag_projection::TagFamily { name: family.into(), tags: tags.iter().map(|s| s.to_string()).collect() }],
    }
}

/// The string value of a returned tag.
pub fn tag_of(dp: &DataPoint, key: &str) -> String {
    for f in &dp.tag_families {
        for t in &f.tags {
            if t.key == key
                && let Some(TagValue { value: Some(tag_value::Value::Str(s)) }) = &t.value
            {
                return s.value.clone();
            }
        }
    }
    panic!("tag {key} missing in {dp:?}")
}

/// A returned field as f64.
pub fn field_of(dp: &DataPoint, name: &str) -> f64 {
    let f = dp.fields.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("field {name} missing in {dp:?}"));
    match f.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(field_value::Value::Float(x)) => x.value,
        Some(field_value::Value::Int(i)) => i.value as f64,
        other => panic!("field {name} is not numeric: {other:?}"),
    }
}

pub fn nanos_of(dp: &DataPoint) -> i64 {
    let t = dp.timestamp.as_ref().expect("timestamp");
    t.seconds * 1_000_000_000 + t.nanos as i64
}

/// Asserts two floats agree to 1e-9 relative (sums may be added in any order).
pub fn assert_close(got: f64, want: f64, what: &str) {
    let tol = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

/// Every stored point of the measure, keyed by (host, ts), with how many
/// times the raw query returned it.
pub async fn stored(http: &Http, begin: i64) -> HashMap<(String, i64), (usize, f64)> {
    let mut out: HashMap<(String, i64), (usize, f64)> = HashMap::new();
    // Page per host so no single response hits the row limit.
    for h in 0..25 {
        let host = format!("host-{h:03}");
        let q = QueryRequest {
            groups: vec![GROUP.into()],
            name: MEASURE.into(),
            time_range: time_range(begin, now_nanos() + HOUR),
            criteria: Some(cond("host", BinaryOp::Eq, tag_str(&host))),
            tag_projection: Some(projection("default", &["host"])),
            field_projection: Some(FieldProjection { names: vec!["usage".into()] }),
            limit: 100_000,
            ..Default::default()
        };
        for dp in http.query(&q).await.data_points {
            let e = out.entry((tag_of(&dp, "host"), nanos_of(&dp))).or_insert((0, 0.0));
            e.0 += 1;
            e.1 = field_of(&dp, "usage");
        }
    }
    out
}

/// Points of the test measure from `begin` to an hour from now.
pub async fn total_count(http: &Http, begin: i64) -> usize {
    count_of(http, GROUP, MEASURE, "usage", begin).await
}

/// Non-null values of `field` in `group`/`measure` from `begin` to an hour
/// from now, counted by the server (a COUNT aggregation).
pub async fn count_of(http: &Http, group: &str, measure: &str, field: &str, begin: i64) -> usize {
    let q = QueryRequest {
        groups: vec![group.into()],
        name: measure.into(),
        time_range: time_range(begin, now_nanos() + HOUR),
        agg: Some(Aggregation { function: AggregationFunction::Count as i32, field_name: field.into(), field_names: vec![] }),
        ..Default::default()
    };
    let r = http.query(&q).await;
    r.data_points.first().map_or(0, |d| field_of(d, field) as usize)
}

/// A returned field's value as sent over the wire (panics if absent).
pub fn field_value_of(dp: &DataPoint, name: &str) -> field_value::Value {
    dp.fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("field {name} missing in {dp:?}"))
        .value
        .clone()
        .unwrap()
        .value
        .unwrap()
}

pub fn assert_exactly_once(got: &HashMap<(String, i64), (usize, f64)>, acked: &[Sample], sent: &HashMap<(String, i64), f64>) {
    for s in acked {
        match got.get(&(s.host.clone(), s.ts)) {
            Some((1, v)) => assert_eq!(*v, s.usage, "acknowledged point {}@{} has the wrong value", s.host, s.ts),
            Some((n, _)) => panic!("acknowledged point {}@{} returned {n} times", s.host, s.ts),
            None => panic!("acknowledged point {}@{} lost", s.host, s.ts),
        }
    }
    for (k, (n, v)) in got {
        assert_eq!(*n, 1, "{k:?} returned {n} times");
        assert_eq!(sent.get(k), Some(v), "{k:?} was never written with this value");
    }
}

/// Writes `rounds` rounds of the same `hosts` × 100 points (a minute
/// apart, from `start`) at versions cycling 0, 1, 2, flushing after each:
/// `rounds` overlapping parts per segment for a compactor to merge. Adds
/// every write to `oracle`.
pub async fn write_overlapping_rounds(http: &Http, start: i64, hosts: usize, rounds: i64, oracle: &mut Oracle) {
    for round in 0..rounds {
        let mut batch = samples(hosts, 100, start, 60_000_000_000, round as u64);
        batch.iter_mut().for_each(|s| s.version = round % 3);
        http.write_ok(&write_request(&batch, round as u64)).await;
        batch.iter().for_each(|s| oracle.add(s));
        http.flush().await;
    }
}
