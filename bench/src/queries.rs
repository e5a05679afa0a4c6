//! The TSBS devops query types, as a Canopy native query and the equivalent
//! MetricsQL over VictoriaMetrics' HTTP API, each answer normalized to
//! `(series key, bucket start in ms) -> value` so the two can be compared.
//!
//! Time buckets: Canopy's bucket `[s, s + w)` equals MetricsQL
//! `max_over_time(x[w])` evaluated at `s + w - 1 ms` (window `(t - w, t]`),
//! so range queries start at the first bucket's start + w − 1 ms.

use std::collections::BTreeMap;

use canopy_api::v1::query_request::{Aggregation, GroupBy, OrderBy};
use canopy_api::v1::*;
use serde_json::Value;

use canopy_bench::tsbs::{FIELDS, Rng};

/// A normalized answer.
pub(crate) type Answer = BTreeMap<(String, i64), f64>;

/// One MetricsQL request: instant (`time`) or range (`start`, `end`, `step`), all in ms.
#[derive(Debug, Clone)]
pub(crate) enum PromQuery {
    Instant { query: String, time_ms: i64, key_field: &'static str },
    Range { query: String, start_ms: i64, end_ms: i64, step_ms: i64, bucket_ms: i64, key_field: &'static str },
}

/// A query type: Canopy requests and VictoriaMetrics requests answering the same question.
pub(crate) struct QueryCase {
    pub(crate) name: &'static str,
    pub(crate) canopy: QueryRequest,
    pub(crate) vm: Vec<PromQuery>,
    /// Series key from a Canopy point's hostname tag (else the field alone).
    pub(crate) by_host: bool,
}

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn ts(ms: i64) -> canopy_api::Timestamp {
    canopy_api::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

fn host_in(hosts: &[String]) -> Criteria {
    let value = if hosts.len() == 1 {
        (BinaryOp::Eq, TagValue { value: Some(tag_value::Value::Str(Str { value: hosts[0].clone() })) })
    } else {
        (BinaryOp::In, TagValue { value: Some(tag_value::Value::StrArray(StrArray { value: hosts.to_vec() })) })
    };
    Criteria {
        exp: Some(criteria::Exp::Condition(Condition {
            name: "hostname".into(),
            op: value.0 as i32,
            value: Some(value.1),
            field_value: None,
        })),
    }
}

/// The maximum of every field per host over `[begin, end)` (ms), with the
/// query's cost in the response: the read-path benchmark's query.
pub(crate) fn max_all_fields_per_host(begin: i64, end: i64) -> QueryRequest {
    QueryRequest { group_by: group_by(&["hostname"], 0), agg: agg(AggregationFunction::Max, &FIELDS), with_stats: true, ..base(begin, end) }
}

fn base(begin: i64, end: i64) -> QueryRequest {
    QueryRequest {
        groups: vec!["benchmark".into()],
        name: "cpu".into(),
        time_range: Some(TimeRange { begin: Some(ts(begin)), end: Some(ts(end)) }),
        limit: 100_000,
        ..Default::default()
    }
}

fn group_by(tags: &[&str], bucket_ms: i64) -> Option<GroupBy> {
    Some(GroupBy {
        tag_projection: Some(TagProjection {
            tag_families: vec![tag_projection::TagFamily { name: "labels".into(), tags: tags.iter().map(|t| t.to_string()).collect() }],
        }),
        field_name: String::new(),
        bucket_millis: bucket_ms,
    })
}

fn agg(function: AggregationFunction, fields: &[&str]) -> Option<Aggregation> {
    Some(Aggregation { function: function as i32, field_name: String::new(), field_names: fields.iter().map(|f| f.to_string()).collect() })
}

fn host_regex(hosts: &[String]) -> String {
    hosts.join("|")
}

/// One MetricsQL range query per field, `query(field)`, evaluated at the
/// end of each `bucket` of `[w, w + span)`.
fn range_per_field(fields: &[&'static str], w: i64, span: i64, bucket: i64, query: impl Fn(&str) -> String) -> Vec<PromQuery> {
    fields
        .iter()
        .map(|&f| PromQuery::Range {
            query: query(f),
            start_ms: w + bucket - 1,
            end_ms: w + span - 1,
            step_ms: bucket,
            bucket_ms: bucket,
            key_field: f,
        })
        .collect()
}

/// The max of each of `fields` per `bucket` over `hosts`, in `[w, w + span)`:
/// one Canopy request, one MetricsQL range query per field.
fn max_per_bucket(name: &'static str, hosts: &[String], w: i64, span: i64, bucket: i64, fields: &[&'static str]) -> QueryCase {
    let mut q = base(w, w + span);
    q.criteria = Some(host_in(hosts));
    q.group_by = group_by(&[], bucket);
    q.agg = agg(AggregationFunction::Max, fields);
    let matcher = match hosts {
        [one] => format!("=\"{one}\""),
        _ => format!("=~\"{}\"", host_regex(hosts)),
    };
    let range = if bucket == HOUR { "1h" } else { "1m" };
    QueryCase {
        name,
        canopy: q,
        vm: range_per_field(fields, w, span, bucket, |f| format!("max(max_over_time(cpu_{f}{{hostname{matcher}}}[{range}]))")),
        by_host: false,
    }
}

/// The mean of each of `fields` per host per hour over `[w, w + 12 h)`.
fn mean_per_host_hour(name: &'static str, w: i64, fields: &[&'static str]) -> QueryCase {
    let mut q = base(w, w + 12 * HOUR);
    q.group_by = group_by(&["hostname"], HOUR);
    q.agg = agg(AggregationFunction::Mean, fields);
    QueryCase { name, canopy: q, vm: range_per_field(fields, w, 12 * HOUR, HOUR, |f| format!("avg_over_time(cpu_{f}[1h])")), by_host: true }
}

/// The readings with usage_user > 90 over `[w, w + 12 h)`, of `hosts`
/// (or of every host when empty).
fn high_cpu(name: &'static str, hosts: &[String], w: i64) -> QueryCase {
    let above = Criteria {
        exp: Some(criteria::Exp::Condition(Condition {
            name: "usage_user".into(),
            op: BinaryOp::Gt as i32,
            value: None,
            field_value: Some(FieldValue { value: Some(field_value::Value::Float(Float { value: 90.0 })) }),
        })),
    };
    let mut q = base(w, w + 12 * HOUR);
    q.criteria = Some(match hosts {
        [] => above,
        _ => Criteria {
            exp: Some(criteria::Exp::Le(Box::new(LogicalExpression {
                op: logical_expression::LogicalOp::And as i32,
                left: Some(Box::new(host_in(hosts))),
                right: Some(Box::new(above)),
            }))),
        },
    });
    q.field_projection = Some(FieldProjection { names: vec!["usage_user".into()] });
    let matcher = match hosts {
        [] => String::new(),
        _ => format!("{{hostname=~\"{}\"}}", host_regex(hosts)),
    };
    if hosts.is_empty() {
        q.tag_projection =
            Some(TagProjection { tag_families: vec![tag_projection::TagFamily { name: "labels".into(), tags: vec!["hostname".into()] }] });
    }
    QueryCase {
        name,
        canopy: q,
        vm: vec![PromQuery::Range {
            query: format!("cpu_usage_user{matcher} > 90"),
            start_ms: w,
            end_ms: w + 12 * HOUR - 10_000,
            step_ms: 10_000,
            bucket_ms: 0,
            key_field: "usage_user",
        }],
        by_host: hosts.is_empty(),
    }
}

/// The fifteen TSBS devops query types over data in `[start_ms, end_ms)` of `scale` hosts.
pub(crate) fn cases(scale: usize, start_ms: i64, end_ms: i64, seed: u64) -> Vec<QueryCase> {
    let mut r = Rng::new(seed ^ 0x0051_EE71);
    let pick_hosts = |n: usize, r: &mut Rng| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        while v.len() < n.min(scale) {
            let h = format!("host_{}", r.next_u64() % scale.max(1) as u64);
            if !v.contains(&h) {
                v.push(h);
            }
        }
        v
    };
    // A window of `len` ms inside the data, aligned to `align`.
    let window = |len: i64, align: i64, r: &mut Rng| -> i64 {
        let span = (end_ms - start_ms - len).max(align);
        let first = (start_ms + align - 1) / align * align;
        first + (r.next_u64() % (span / align).max(1) as u64) as i64 * align
    };
    let mut out = Vec::new();

    let h1 = pick_hosts(1, &mut r);
    let w = window(HOUR, MIN, &mut r);
    out.push(max_per_bucket("single-groupby-1-1-1", &h1, w, HOUR, MIN, &FIELDS[..1]));

    let h8 = pick_hosts(8, &mut r);
    let w = window(HOUR, MIN, &mut r);
    out.push(max_per_bucket("single-groupby-5-8-1", &h8, w, HOUR, MIN, &FIELDS[..5]));

    let h8 = pick_hosts(8, &mut r);
    let w = window(8 * HOUR, HOUR, &mut r);
    out.push(max_per_bucket("cpu-max-all-8", &h8, w, 8 * HOUR, HOUR, &FIELDS));

    let w = window(12 * HOUR, HOUR, &mut r);
    out.push(mean_per_host_hour("double-groupby-1", w, &FIELDS[..1]));

    let h1 = pick_hosts(1, &mut r);
    let w = window(12 * HOUR, 10_000, &mut r);
    out.push(high_cpu("high-cpu-1", &h1, w));

    let mut q = base(start_ms, end_ms);
    q.group_by = group_by(&["hostname"], 0);
    q.agg = agg(AggregationFunction::Last, &FIELDS);
    out.push(QueryCase {
        name: "lastpoint",
        canopy: q,
        vm: FIELDS
            .iter()
            .map(|f| PromQuery::Instant { query: format!("last_over_time(cpu_{f}[1h])"), time_ms: end_ms - 1, key_field: f })
            .collect(),
        by_host: true,
    });

    let e = window(5 * MIN, MIN, &mut r) + 5 * MIN;
    let mut q = base(e - 5 * MIN, e);
    q.group_by = group_by(&[], MIN);
    q.agg = agg(AggregationFunction::Max, &["usage_user"]);
    q.order_by = Some(OrderBy { sort: Sort::Desc as i32 });
    q.limit = 5;
    out.push(QueryCase {
        name: "groupby-orderby-limit",
        canopy: q,
        vm: range_per_field(&["usage_user"], e - 5 * MIN, 5 * MIN, MIN, |f| format!("max(max_over_time(cpu_{f}[1m]))")),
        by_host: false,
    });

    // The other eight TSBS devops types, drawn after the first seven so
    // those keep their hosts and windows for a given seed.
    let h1 = pick_hosts(1, &mut r);
    let w = window(8 * HOUR, HOUR, &mut r);
    out.push(max_per_bucket("cpu-max-all-1", &h1, w, 8 * HOUR, HOUR, &FIELDS));
    let h1 = pick_hosts(1, &mut r);
    let w = window(12 * HOUR, MIN, &mut r);
    out.push(max_per_bucket("single-groupby-1-1-12", &h1, w, 12 * HOUR, MIN, &FIELDS[..1]));
    let h8 = pick_hosts(8, &mut r);
    let w = window(HOUR, MIN, &mut r);
    out.push(max_per_bucket("single-groupby-1-8-1", &h8, w, HOUR, MIN, &FIELDS[..1]));
    let h1 = pick_hosts(1, &mut r);
    let w = window(HOUR, MIN, &mut r);
    out.push(max_per_bucket("single-groupby-5-1-1", &h1, w, HOUR, MIN, &FIELDS[..5]));
    let h1 = pick_hosts(1, &mut r);
    let w = window(12 * HOUR, MIN, &mut r);
    out.push(max_per_bucket("single-groupby-5-1-12", &h1, w, 12 * HOUR, MIN, &FIELDS[..5]));
    let w = window(12 * HOUR, HOUR, &mut r);
    out.push(mean_per_host_hour("double-groupby-5", w, &FIELDS[..5]));
    let w = window(12 * HOUR, HOUR, &mut r);
    out.push(mean_per_host_hour("double-groupby-all", w, &FIELDS));
    let w = window(12 * HOUR, 10_000, &mut r);
    out.push(high_cpu("high-cpu-all", &[], w));
    out
}

fn number(v: &Value) -> Option<f64> {
    v.as_str()?.parse().ok()
}

/// Canopy's answer: buckets (or raw timestamps) per field, keyed by host when grouped by it.
pub(crate) fn canopy_answer(resp: &Value, by_host: bool) -> anyhow::Result<Answer> {
    let mut out = Answer::new();
    for dp in resp["dataPoints"].as_array().into_iter().flatten() {
        let t = match dp["timestamp"].as_str() {
            Some(s) => parse_rfc3339_ms(s)?,
            None => 0,
        };
        let host = dp["tagFamilies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["tags"].as_array().into_iter().flatten())
            .find(|t| t["key"] == "hostname")
            .and_then(|t| t["value"]["str"]["value"].as_str())
            .unwrap_or("");
        for f in dp["fields"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().unwrap_or_default();
            // Protobuf JSON omits zero values: `{"float": {}}` is 0.
            let v = &f["value"];
            let x = if v.get("float").is_some() {
                Some(v["float"]["value"].as_f64().unwrap_or(0.0))
            } else if v.get("int").is_some() {
                Some(v["int"]["value"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0.0))
            } else {
                None
            };
            let Some(x) = x else { continue };
            let key = if by_host { format!("{host}/{name}") } else { name.to_string() };
            out.insert((key, t), x);
        }
    }
    Ok(out)
}

/// VictoriaMetrics' answer for one request, in the same key space.
pub(crate) fn vm_answer(data: &Value, q: &PromQuery, by_host: bool, out: &mut Answer) {
    let (key_field, shift, bucket) = match q {
        PromQuery::Instant { key_field, .. } => (*key_field, 0, -1),
        PromQuery::Range { key_field, bucket_ms, .. } => (*key_field, if *bucket_ms > 0 { bucket_ms - 1 } else { 0 }, *bucket_ms),
    };
    for s in data["result"].as_array().into_iter().flatten() {
        let host = s["metric"]["hostname"].as_str().unwrap_or("");
        let key = if by_host { format!("{host}/{key_field}") } else { key_field.to_string() };
        if let Some(v) = s["value"].as_array()
            && let Some(x) = v.get(1).and_then(number)
        {
            out.insert((key.clone(), 0), x);
        }
        for v in s["values"].as_array().into_iter().flatten() {
            let t = (v[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64 - shift;
            if let Some(x) = v.get(1).and_then(number) {
                out.insert((key.clone(), if bucket == -1 { 0 } else { t }), x);
            }
        }
    }
}

fn parse_rfc3339_ms(s: &str) -> anyhow::Result<i64> {
    // "2026-11-26T04:31:32+00:00" or "...Z", optional fraction.
    let s = s.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = s.split_once('T').ok_or_else(|| anyhow::anyhow!("bad timestamp {s}"))?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse()).collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse()).collect::<Result<_, _>>()?;
    let ms_frac: i64 = if frac.is_empty() { 0 } else { format!("{:0<3}", &frac[..frac.len().min(3)]).parse()? };
    Ok((days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + ms_frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Compares two answers: same keys, values equal to 1e-9 relative. The
/// error lists the first differences.
pub(crate) fn compare(name: &str, canopy: &Answer, vm: &Answer) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (k, a) in canopy {
        match vm.get(k) {
            None => diffs.push(format!("{k:?}: canopy {a}, victoria-metrics has none")),
            Some(b) if (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1.0) => {
                diffs.push(format!("{k:?}: canopy {a}, victoria-metrics {b}"))
            }
            _ => {}
        }
    }
    for (k, b) in vm {
        if !canopy.contains_key(k) {
            diffs.push(format!("{k:?}: victoria-metrics {b}, canopy has none"));
        }
    }
    if canopy.is_empty() {
        diffs.push("empty answer".into());
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let n = diffs.len();
    diffs.truncate(10);
    Err(format!("{name}: answers differ in {n} places:\n  {}", diffs.join("\n  ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deliberately_wrong_answer_fails_the_comparison() {
        let mut a = Answer::new();
        a.insert(("usage_user".into(), 60_000), 42.5);
        a.insert(("usage_user".into(), 120_000), 7.0);
        let b = a.clone();
        assert!(compare("q", &a, &b).is_ok());
        let mut wrong = b.clone();
        wrong.insert(("usage_user".into(), 120_000), 7.01);
        let err = compare("q", &a, &wrong).unwrap_err();
        assert!(err.contains("canopy 7, victoria-metrics 7.01"), "{err}");
        let mut missing = b;
        missing.remove(&("usage_user".into(), 60_000));
        assert!(compare("q", &a, &missing).unwrap_err().contains("has none"));
        assert!(compare("q", &Answer::new(), &Answer::new()).unwrap_err().contains("empty"));
    }

    #[test]
    fn zero_values_omitted_by_protobuf_json_read_as_zero() {
        let canopy: Value = serde_json::json!({"dataPoints": [{"fields": [{"name": "usage_user", "value": {"float": {}}}]}]});
        assert_eq!(canopy_answer(&canopy, false).unwrap().get(&("usage_user".to_string(), 0)), Some(&0.0));
    }

    #[test]
    fn answers_from_both_peers_land_in_one_key_space() {
        let canopy: Value = serde_json::json!({"dataPoints": [
            {"timestamp": "2026-11-26T04:31:00Z", "fields": [{"name": "usage_user", "value": {"float": {"value": 5.5}}}]}
        ]});
        let t = parse_rfc3339_ms("2026-11-26T04:31:00Z").unwrap();
        assert_eq!(t % 60_000, 0);
        let vm: Value = serde_json::json!({"result": [{"metric": {}, "values": [[(t + 59_999) as f64 / 1000.0, "5.5"]]}]});
        let mut got = Answer::new();
        vm_answer(
            &vm,
            &PromQuery::Range { query: String::new(), start_ms: 0, end_ms: 0, step_ms: 60_000, bucket_ms: 60_000, key_field: "usage_user" },
            false,
            &mut got,
        );
        assert_eq!(canopy_answer(&canopy, false).unwrap(), got);
    }
}
