//! InfluxDB line protocol writes: `POST /write` (v1: `db`, `precision`) and
//! `POST /api/v2/write` (`bucket`, `precision`), plain or gzip bodies.
//! The database / bucket names the group (default `influx`); each
//! measurement is a measure; tags are labels; fields keep their types.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::autoschema::{ExpansionBudget, FieldNames, label_bytes, rows_of, sanitize, write_all};
use super::body::decode_body;
use super::label_sets::WireLabels;
use super::line_protocol::{for_each_line, precision_nanos, truncate};
use super::measure_rows::MeasureRows;
use crate::error::{ApiError, Code};
use crate::service::Gateway;

pub(crate) async fn write_v1(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match write(&gw, q.get("db"), q.get("precision"), &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        // The status tells clients whether to retry: Telegraf drops a batch
        // answered 400 and retries one answered 429 or 503.
        Err(e) => {
            let e = e.for_client();
            (e.http_status(), axum::Json(serde_json::json!({ "error": e.message }))).into_response()
        }
    }
}

pub(crate) async fn write_v2(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match write(&gw, q.get("bucket"), q.get("precision"), &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let e = e.for_client();
            (e.http_status(), axum::Json(serde_json::json!({ "code": v2_code(e.code), "message": e.message }))).into_response()
        }
    }
}

/// The `code` of an InfluxDB 2 error body.
fn v2_code(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid",
        Code::NotFound => "not found",
        Code::AlreadyExists => "conflict",
        Code::ResourceExhausted => "too many requests",
        Code::Unavailable | Code::DeadlineExceeded => "unavailable",
        Code::Unauthenticated => "unauthorized",
        Code::PermissionDenied => "forbidden",
        Code::FailedPrecondition | Code::Internal => "internal error",
    }
}

/// `GET|HEAD /ping`: InfluxDB clients check the server is up.
pub(crate) async fn ping() -> Response {
    (StatusCode::NO_CONTENT, [("X-Influxdb-Version", "canopy")]).into_response()
}

/// `GET /health` (InfluxDB 2 clients).
pub(crate) async fn health() -> Response {
    axum::Json(serde_json::json!({ "name": "canopy", "status": "pass", "message": "ready for writes" })).into_response()
}

/// `/query`: only so that `CREATE DATABASE` from Telegraf succeeds; groups
/// are created on first write. Reads go through Canopy's own query API.
pub(crate) async fn query() -> Response {
    axum::Json(serde_json::json!({ "results": [{ "statement_id": 0 }] })).into_response()
}

async fn write(gw: &Gateway, db: Option<&String>, precision: Option<&String>, headers: &HeaderMap, body: &Bytes) -> Result<(), ApiError> {
    let agents = &gw.agents;
    let unit = precision_nanos(precision.map_or("", String::as_str))
        .ok_or_else(|| ApiError::invalid("precision", format!("{:?} is not one of ns, us, ms, s", precision.unwrap())))?;
    let body = decode_body(headers, body, agents.cfg.body_bytes_max)?;
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::invalid("body", format!("not UTF-8: {e}")))?;
    let group = db.filter(|d| !d.is_empty()).map(|d| sanitize(d)).unwrap_or_else(|| agents.cfg.influx_group.clone());
    let now = canopy_model::now_nanos();
    let mut by_measure: BTreeMap<String, MeasureRows> = BTreeMap::new();
    let mut budget = ExpansionBudget::new(&agents.cfg);
    // The lists of field names seen (lines of a measurement name the same
    // fields, so they share one list).
    let mut names: Vec<FieldNames> = Vec::new();
    {
        let mut sets = agents.label_sets.lock();
        for_each_line(text, |number, l| {
            // A series' text is parsed, unescaped, sorted and interned the
            // first time it is seen, in any request; lines after it cost one
            // hash and one compare of that text. (Remote write's keys share
            // the map: theirs are protobuf, starting with byte 0x0a, which a
            // line never does.)
            let wire = sets.by_wire(l.series.as_bytes(), |sets| {
                l.parse_series().map_err(|e| ApiError::invalid("body", format!("line {number}: {e}: {:?}", truncate(l.series))))?;
                let tags = l.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
                let label_bytes = label_bytes(tags.clone());
                Ok::<_, ApiError>(WireLabels { name: Some(l.measurement.as_ref().into()), labels: sets.intern_iter(tags), label_bytes })
            })?;
            budget.charge(1, wire.label_bytes)?;
            let ts = match l.timestamp {
                None => now,
                Some(t) => {
                    t.checked_mul(unit).ok_or_else(|| ApiError::invalid("body", format!("line {number}: timestamp out of range")))?
                }
            };
            let same = |n: &FieldNames| n.len() == l.fields.len() && n.iter().zip(&l.fields).all(|(a, (b, _))| a == b);
            // Only the latest few lists: a body of lines that each name other
            // fields must not cost a scan of all of them per line.
            let line_names = match names.iter().rev().take(8).find(|n| same(n)) {
                Some(n) => n.clone(),
                None => {
                    let n: FieldNames = l.fields.iter().map(|(k, _)| k.to_string()).collect();
                    names.push(n.clone());
                    n
                }
            };
            let Some(measurement) = wire.name.as_deref() else {
                return Err(ApiError::invalid("body", format!("line {number}: missing measurement")));
            };
            rows_of(&mut by_measure, measurement).push(&wire.labels, &line_names, l.fields.iter().map(|(_, v)| v.clone()).collect(), ts);
            Ok::<_, ApiError>(())
        })?;
    }
    write_all(gw, &group, by_measure).await?.into_result().map(|_| ())
}
