//! Prometheus remote write 1.0 (`POST /api/v1/write`) and remote read
//! (`POST /api/v1/read`, sampled responses), snappy-compressed protobuf.
//!
//! A metric name is a measure (group `prometheus` by default) with one float
//! field `value`; the other labels are tags; the full label set is the
//! series. Remote read turns `=` matchers on stored labels into criteria and
//! applies the rest (`!=`, `=~`, `!~`, empty values) to the series it finds,
//! with Prometheus' semantics (a missing label equals "").

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use canopy_api::prometheus as pb;
use canopy_api::v1::{self, tag_value};
use canopy_meta::MetaError;
use canopy_model::{FieldVal, IdMap, LIMIT_MAX, nanos_to_timestamp};
use prost::Message;
use regex::Regex;

use super::autoschema::{ExpansionBudget, FieldNames, LABELS_FAMILY, Outcome, SERIES_TAG, label_bytes, sanitize, write_all};
use super::body::{decode_snappy, with_snappy_body};
use super::label_sets::{Adding, WireLabels};
use super::measure_rows::{AgentRow, MeasureRows};
use super::remote_write_decode::for_each_series;
use crate::error::{ApiError, Code};
use crate::service::Gateway;

const NAME: &str = "__name__";
const VALUE_FIELD: &str = "value";

pub(crate) async fn remote_write(State(gw): State<Gateway>, body: Bytes) -> Response {
    match write(&gw, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn write(gw: &Gateway, body: &Bytes) -> Result<(), ApiError> {
    let value_field: FieldNames = Arc::new([VALUE_FIELD.to_string()]);
    // Decoded synchronously, borrowing labels from the body: the rows hold
    // interned label sets, not the body.
    let (by_metric, mut outcome) = with_snappy_body(body, gw.agents.cfg.body_bytes_max, |raw| {
        let mut by_metric: Vec<(String, MeasureRows)> = Vec::new();
        let mut metric_index: BTreeMap<Box<str>, usize> = BTreeMap::new();
        // Each label set seen in this request (by the address of its kept
        // entry, which the map holds so no address is reused): where its
        // rows go.
        let mut slots: IdMap<usize, (Arc<WireLabels>, Slot)> = IdMap::default();
        let mut outcome = Outcome::default();
        let mut budget = ExpansionBudget::new(&gw.agents.cfg);
        // A series' labels as parsed, reused across series.
        let mut parsed: Vec<(&str, &str)> = Vec::new();
        let mut sets = gw.agents.label_sets.lock();
        for_each_series(raw, |ts| {
            // Parsed the first time these label bytes are seen, in any request.
            let parse = |sets: &mut Adding<'_>| {
                ts.labels(&mut parsed)?;
                let name = parsed.iter().rev().find(|(k, _)| *k == NAME).map(|(_, v)| Box::from(*v));
                let kept: Vec<(&str, &str)> = parsed.iter().copied().filter(|&(k, v)| k != NAME && !v.is_empty()).collect();
                // Shared with every earlier series of these labels.
                Ok::<_, ApiError>(WireLabels { name, labels: sets.intern(&kept), label_bytes: label_bytes(parsed.iter().copied()) })
            };
            let slot = sets.by_wire_with(ts.raw_labels, parse, |wire| {
                slots
                    .entry(Arc::as_ptr(wire) as usize)
                    .or_insert_with(|| {
                        let metric = wire.name.as_ref().map(|name| {
                            let m = *metric_index.entry(name.clone()).or_insert_with(|| {
                                let mut rows = MeasureRows::default();
                                rows.names_index(&value_field);
                                by_metric.push((name.to_string(), rows));
                                by_metric.len() - 1
                            });
                            (m, by_metric[m].1.series_index(&wire.labels))
                        });
                        (wire.clone(), Slot { metric, label_bytes: wire.label_bytes })
                    })
                    .1
            })?;
            budget.charge(ts.samples.len(), slot.label_bytes)?;
            let Some((m, series)) = slot.metric else {
                outcome.merge(Outcome {
                    rejected: ts.samples.len(),
                    reasons: vec!["a series without __name__".into()],
                    ..Default::default()
                });
                return Ok(());
            };
            let (name, rows) = &mut by_metric[m];
            for &(value, ms) in &ts.samples {
                let Some(t) = ms.checked_mul(1_000_000) else {
                    outcome.reject(format!("{name}: timestamp {ms} ms is out of range"));
                    continue;
                };
                // Names 0: the metric's only list, `value`.
                rows.rows.push(AgentRow { series, names: 0, values: smallvec::smallvec![FieldVal::Float(value)], ts: t });
            }
            Ok::<_, ApiError>(())
        })?;
        Ok((by_metric, outcome))
    })?;
    let group = gw.agents.cfg.prometheus_group.clone();
    outcome.merge(write_all(gw, &group, by_metric).await?);
    outcome.into_result().map(|_| ())
}

/// Where a request's samples of one label set go: the metric (an index
/// into the request's metrics) and the series within it, or nowhere when
/// the set has no `__name__`; and its bytes, for the expansion budget.
#[derive(Debug, Clone, Copy)]
struct Slot {
    metric: Option<(usize, u32)>,
    label_bytes: usize,
}

pub(crate) async fn remote_read(State(gw): State<Gateway>, body: Bytes) -> Response {
    match read(&gw, &body).await {
        Ok(bytes) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "snappy")], bytes)
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn read(gw: &Gateway, body: &Bytes) -> Result<Vec<u8>, ApiError> {
    let raw = decode_snappy(body, gw.agents.cfg.body_bytes_max)?;
    let req = pb::ReadRequest::decode(raw.as_slice()).map_err(|e| ApiError::invalid("body", format!("bad ReadRequest protobuf: {e}")))?;
    // One deadline and one sample budget for the whole request, however
    // many queries and time windows it takes.
    let mut budget = gw.agents.cfg.read_samples_max;
    let all = async {
        let mut results = Vec::with_capacity(req.queries.len());
        for q in &req.queries {
            results.push(read_query(gw, q, &mut budget).await?);
        }
        Ok::<_, ApiError>(results)
    };
    let results = tokio::time::timeout(gw.query_timeout, all)
        .await
        .map_err(|_| ApiError::new(Code::DeadlineExceeded, format!("remote read took longer than {:?}", gw.query_timeout)))??;
    let encoded = pb::ReadResponse { results }.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&encoded).map_err(|e| ApiError::new(Code::Internal, e.to_string()))
}

/// A compiled label matcher.
struct Matcher {
    name: String,
    kind: pb::label_matcher::Type,
    value: String,
    re: Option<Regex>,
}

impl Matcher {
    fn new(m: &pb::LabelMatcher) -> Result<Matcher, ApiError> {
        let kind = pb::label_matcher::Type::try_from(m.r#type).map_err(|_| ApiError::invalid("matchers.type", "unknown matcher type"))?;
        let re = match kind {
            pb::label_matcher::Type::Re | pb::label_matcher::Type::Nre => Some(
                Regex::new(&format!("^(?:{})$", m.value))
                    .map_err(|e| ApiError::invalid("matchers.value", format!("bad regex {:?}: {e}", m.value)))?,
            ),
            _ => None,
        };
        Ok(Matcher { name: m.name.clone(), kind, value: m.value.clone(), re })
    }

    /// Prometheus semantics: a missing label matches as "".
    fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.kind {
            pb::label_matcher::Type::Eq => v == self.value,
            pb::label_matcher::Type::Neq => v != self.value,
            pb::label_matcher::Type::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            pb::label_matcher::Type::Nre => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

async fn read_query(gw: &Gateway, q: &pb::Query, budget: &mut usize) -> Result<pb::QueryResult, ApiError> {
    let matchers = q.matchers.iter().map(Matcher::new).collect::<Result<Vec<_>, _>>()?;
    let group = gw.agents.cfg.prometheus_group.clone();
    let names: Vec<String> = match matchers.iter().find(|m| m.name == NAME && m.kind == pb::label_matcher::Type::Eq) {
        Some(m) => vec![sanitize(&m.value)],
        None => match gw.registry.list_measures(&group).await {
            Ok(ms) => ms
                .into_iter()
                .filter_map(|m| m.metadata.map(|md| md.name))
                .filter(|n| matchers.iter().filter(|m| m.name == NAME).all(|m| m.matches(Some(n))))
                .collect(),
            Err(MetaError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let begin = q.start_timestamp_ms.saturating_mul(1_000_000);
    let end = q.end_timestamp_ms.saturating_mul(1_000_000).saturating_add(1);
    let mut timeseries = Vec::new();
    for name in names {
        timeseries.extend(read_metric(gw, &group, &name, &matchers, begin, end, budget).await?);
    }
    timeseries.sort_by(|a, b| a.labels.iter().map(|l| (&l.name, &l.value)).cmp(b.labels.iter().map(|l| (&l.name, &l.value))));
    Ok(pb::QueryResult { timeseries })
}

/// All series of one metric matching the matchers, with samples in range,
/// taking their count from `budget` (samples the request may still return).
async fn read_metric(
    gw: &Gateway,
    group: &str,
    name: &str,
    matchers: &[Matcher],
    begin: i64,
    end: i64,
    budget: &mut usize,
) -> Result<Vec<pb::TimeSeries>, ApiError> {
    let schema = match gw.registry.measure_schema(group, name).await {
        Ok(s) => s,
        Err(MetaError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if schema.layout.field_index(VALUE_FIELD).is_none() {
        return Ok(Vec::new());
    }
    let tags: Vec<String> = schema.layout.tags.iter().map(|(_, n, _)| n.clone()).collect();
    // `=` with a non-empty value on a stored label narrows the scan; every
    // matcher is still checked on the result.
    let mut criteria: Option<v1::Criteria> = None;
    for m in matchers.iter().filter(|m| m.kind == pb::label_matcher::Type::Eq && !m.value.is_empty() && m.name != NAME) {
        if !tags.contains(&m.name) {
            return Ok(Vec::new());
        }
        let c = v1::Criteria {
            exp: Some(v1::criteria::Exp::Condition(v1::Condition {
                name: m.name.clone(),
                op: v1::BinaryOp::Eq as i32,
                value: Some(v1::TagValue { value: Some(tag_value::Value::Str(v1::Str { value: m.value.clone() })) }),
                field_value: None,
            })),
        };
        criteria = Some(match criteria {
            None => c,
            Some(prev) => v1::Criteria {
                exp: Some(v1::criteria::Exp::Le(Box::new(v1::LogicalExpression {
                    op: v1::logical_expression::LogicalOp::And as i32,
                    left: Some(Box::new(prev)),
                    right: Some(Box::new(c)),
                }))),
            },
        });
    }
    let mut series: BTreeMap<String, Option<pb::TimeSeries>> = BTreeMap::new();
    // Windows of time small enough that each answer fits the row limit.
    let mut from = begin;
    let mut width = end - begin;
    while from < end {
        let to = from.saturating_add(width).min(end);
        let req = v1::QueryRequest {
            groups: vec![group.into()],
            name: name.into(),
            time_range: Some(v1::TimeRange { begin: Some(nanos_to_timestamp(from)), end: Some(nanos_to_timestamp(to)) }),
            criteria: criteria.clone(),
            tag_projection: Some(v1::TagProjection {
                tag_families: vec![v1::tag_projection::TagFamily { name: LABELS_FAMILY.into(), tags: tags.clone() }],
            }),
            field_projection: Some(v1::FieldProjection { names: vec![VALUE_FIELD.into()] }),
            limit: LIMIT_MAX,
            ..Default::default()
        };
        let resp = gw.query(req).await?;
        if resp.data_points.len() as u32 >= LIMIT_MAX {
            if width > 1 {
                width /= 2;
                continue;
            }
            // Never a silently cut answer.
            return Err(ApiError::new(
                Code::ResourceExhausted,
                format!("{name}: more than {LIMIT_MAX} samples at one instant; narrow the matchers"),
            ));
        }
        *budget = budget.checked_sub(resp.data_points.len()).ok_or_else(|| {
            ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "the read returns more than {} samples (limit remote-read-samples-max); narrow the time range or matchers",
                    gw.agents.cfg.read_samples_max
                ),
            )
        })?;
        for dp in resp.data_points {
            collect(&mut series, name, dp, matchers);
        }
        from = to;
    }
    Ok(series.into_values().flatten().collect())
}

/// Adds a returned point to its series; series the matchers exclude are
/// remembered as `None` so they are checked once.
fn collect(series: &mut BTreeMap<String, Option<pb::TimeSeries>>, name: &str, dp: v1::DataPoint, matchers: &[Matcher]) {
    let mut key = String::new();
    let mut labels = vec![pb::Label { name: NAME.into(), value: name.into() }];
    for t in dp.tag_families.into_iter().flat_map(|f| f.tags) {
        if let Some(tag_value::Value::Str(s)) = t.value.and_then(|v| v.value) {
            if t.key == SERIES_TAG {
                key = s.value;
            } else {
                labels.push(pb::Label { name: t.key, value: s.value });
            }
        }
    }
    let value = match dp.fields.first().and_then(|f| f.value.as_ref()).and_then(|v| v.value.as_ref()) {
        Some(v1::field_value::Value::Float(f)) => f.value,
        _ => return,
    };
    let ts_ms = dp.timestamp.map_or(0, |t| t.seconds * 1000 + (t.nanos / 1_000_000) as i64);
    let entry = series.entry(key).or_insert_with(|| {
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let included = matchers.iter().all(|m| m.matches(labels.iter().find(|l| l.name == m.name).map(|l| l.value.as_str())));
        included.then_some(pb::TimeSeries { labels, samples: Vec::new() })
    });
    if let Some(ts) = entry {
        ts.samples.push(pb::Sample { value, timestamp: ts_ms });
    }
}
