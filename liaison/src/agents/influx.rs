//! InfluxDB line protocol writes: `POST /write` (v1: `db`, `precision`) and
//! `POST /api/v2/write` (`bucket`, `precision`), plain or gzip bodies.
//! The database / bucket names the group (default `influx`); each
//! measurement is a measure; tags are labels; fields keep their types.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::autoschema::{AgentRow, ExpansionBudget, label_bytes, sanitize, write_all};
use super::body::decode_body;
use super::line_protocol::{parse, precision_nanos};
use crate::error::ApiError;
use crate::service::Gateway;

pub(crate) async fn write_v1(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match write(&gw, q.get("db"), q.get("precision"), &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": e.message }))).into_response(),
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
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "code": "invalid", "message": e.message }))).into_response(),
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
    let lines = parse(text).map_err(|e| ApiError::invalid("body", e))?;
    let group = db.filter(|d| !d.is_empty()).map(|d| sanitize(d)).unwrap_or_else(|| agents.cfg.influx_group.clone());
    let now = canopy_model::now_nanos();
    let mut by_measure: BTreeMap<String, Vec<AgentRow>> = BTreeMap::new();
    let mut budget = ExpansionBudget::new(&agents.cfg);
    for (i, l) in lines.into_iter().enumerate() {
        budget.charge(1, label_bytes(l.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))))?;
        let ts = match l.timestamp {
            None => now,
            Some(t) => t.checked_mul(unit).ok_or_else(|| ApiError::invalid("body", format!("line {}: timestamp out of range", i + 1)))?,
        };
        by_measure.entry(l.measurement).or_default().push(AgentRow { labels: std::sync::Arc::new(l.tags), fields: l.fields, ts });
    }
    write_all(gw, &group, by_measure).await?.into_result().map(|_| ())
}
