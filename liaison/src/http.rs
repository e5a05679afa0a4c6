//! The HTTP front end. Routes follow the gateway layout users of BanyanDB
//! know; bodies are the protobuf JSON mapping of the gRPC messages.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use canopy_api::v1::{
    GroupRegistryServiceCreateRequest, GroupRegistryServiceGetResponse, GroupRegistryServiceListResponse,
    GroupRegistryServiceUpdateRequest, MeasureRegistryServiceCreateRequest, MeasureRegistryServiceCreateResponse,
    MeasureRegistryServiceGetResponse, MeasureRegistryServiceListResponse, MeasureRegistryServiceUpdateRequest,
    MeasureRegistryServiceUpdateResponse, Metadata, QueryRequest, Status, WriteRequest,
};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::auth::{Tokens, credential_of, http_permission};
use crate::error::{ApiError, error_response};
use crate::service::Gateway;

/// Largest request body accepted.
pub(crate) const BODY_BYTES_MAX: usize = 64 << 20;
/// HTTP requests handled at once; more wait in the accept queue, so at most
/// this many bodies (each at most `BODY_BYTES_MAX`) are in memory.
pub(crate) const HTTP_REQUESTS_MAX: usize = 64;

/// The HTTP routes.
pub(crate) fn router(gw: Gateway, read_timeout: Duration) -> Router {
    let app = Router::new()
        .route("/api/v1/group/schema", post(create_group))
        .route("/api/v1/group/schema/lists", get(list_groups))
        .route("/api/v1/group/schema/{group}", get(get_group).put(update_group).delete(delete_group))
        .route("/api/v1/measure/schema", post(create_measure))
        .route("/api/v1/measure/schema/lists/{group}", get(list_measures))
        .route("/api/v1/measure/schema/{group}/{name}", get(get_measure).put(update_measure).delete(delete_measure))
        .route("/api/v1/measure/data", post(query))
        .route("/api/v1/measure/write", post(write))
        .route("/api/v1/admin/flush", post(flush))
        .route("/api/v1/admin/compact", post(compact))
        .merge(crate::agents::routes())
        .fallback(|| async { ApiError::new(crate::Code::NotFound, "no such route") });
    let ops = crate::metrics::ops_router(gw.metrics.clone());
    let auth = gw.auth.clone();
    authenticated(limited(app, gw, read_timeout).merge(ops), auth)
}

/// Checks every request's token (`auth.rs`) before anything else, when
/// tokens are configured.
fn authenticated(app: Router, tokens: Option<Arc<Tokens>>) -> Router {
    match tokens {
        Some(t) => app.layer(axum::middleware::from_fn_with_state(t, authenticate)),
        None => app,
    }
}

async fn authenticate(State(tokens): State<Arc<Tokens>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Some(need) = http_permission(req.method(), req.uri().path()) {
        let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(credential_of);
        // InfluxDB 1 clients may send the token as the `p` query parameter.
        let credential =
            header.or_else(|| req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("p=")).map(|p| p.to_string())));
        if let Err(e) = tokens.check(credential.as_deref(), need) {
            let mut resp = e.into_response();
            if resp.status() == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
            }
            return resp;
        }
    }
    next.run(req).await
}

/// Applies the limits every HTTP port has — body size, requests in
/// progress (a semaphore per port), the time to send the body and to answer
/// — and the gateway state.
fn limited(app: Router<Gateway>, gw: Gateway, read_timeout: Duration) -> Router {
    // Longer than any query may run (it has its own deadline) and any write
    // may retry: a handler stuck past this is answered and its slot freed.
    let deadlines = Deadlines { read: read_timeout, answer: gw.query_timeout + Duration::from_secs(30) };
    app.layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(deadlines, read_body_in_time))
        .layer(axum::middleware::from_fn_with_state(Arc::new(Semaphore::new(HTTP_REQUESTS_MAX)), limit_requests))
        .with_state(gw)
}

/// How long a request's body may take to arrive, and its answer after that.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    read: Duration,
    answer: Duration,
}

/// Reads the body within the read deadline (a client trickling it would
/// otherwise hold a request slot for as long as it likes: 408), then runs
/// the handler within the answer deadline (504).
async fn read_body_in_time(State(d): State<Deadlines>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(d.read, axum::body::to_bytes(body, BODY_BYTES_MAX)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                error_response(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_ARGUMENT", format!("body: larger than {BODY_BYTES_MAX} bytes"))
            } else {
                error_response(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", format!("body: could not be read: {e}"))
            };
        }
        Err(_) => {
            return error_response(StatusCode::REQUEST_TIMEOUT, "DEADLINE_EXCEEDED", format!("body: not received within {:?}", d.read));
        }
    };
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    match tokio::time::timeout(d.answer, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => error_response(StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED", format!("no answer within {:?}", d.answer)),
    }
}

/// The dedicated InfluxDB port.
pub(crate) fn influx_router(gw: Gateway, read_timeout: Duration) -> Router {
    let app = crate::agents::influx_routes().fallback(|| async {
        ApiError::new(crate::Code::NotFound, "no such route; this port serves InfluxDB writes (/write, /api/v2/write)")
    });
    let auth = gw.auth.clone();
    authenticated(limited(app, gw, read_timeout), auth)
}

/// The dedicated OTLP/HTTP port: only `/v1/metrics`.
pub(crate) fn otlp_router(gw: Gateway, read_timeout: Duration) -> Router {
    let app = crate::agents::otlp_http_routes()
        .fallback(|| async { ApiError::new(crate::Code::NotFound, "no such route; OTLP/HTTP serves POST /v1/metrics") });
    let auth = gw.auth.clone();
    authenticated(limited(app, gw, read_timeout), auth)
}

async fn limit_requests(State(permits): State<Arc<Semaphore>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let _permit = permits.acquire().await.expect("never closed");
    next.run(req).await
}

/// Parses a JSON body, reporting where it is malformed.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("invalid JSON: {e}")))
}

async fn create_group(State(gw): State<Gateway>, body: Bytes) -> Result<Response, ApiError> {
    let req: GroupRegistryServiceCreateRequest = parse(&body)?;
    gw.create_group(req.group).await?;
    Ok((StatusCode::OK, Json(serde_json::json!({}))).into_response())
}

async fn list_groups(State(gw): State<Gateway>) -> Result<Json<GroupRegistryServiceListResponse>, ApiError> {
    Ok(Json(GroupRegistryServiceListResponse { group: gw.registry.list_groups().await? }))
}

async fn get_group(State(gw): State<Gateway>, Path(group): Path<String>) -> Result<Json<GroupRegistryServiceGetResponse>, ApiError> {
    Ok(Json(GroupRegistryServiceGetResponse { group: Some(gw.registry.get_group(&group).await?) }))
}

async fn update_group(State(gw): State<Gateway>, Path(group): Path<String>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let mut req: GroupRegistryServiceUpdateRequest = parse(&body)?;
    if let Some(g) = req.group.as_mut() {
        let md = g.metadata.get_or_insert_with(Metadata::default);
        if md.name.is_empty() {
            md.name = group.clone();
        } else if md.name != group {
            return Err(ApiError::invalid("group.metadata.name", format!("{:?} does not match the path {group:?}", md.name)));
        }
    }
    gw.update_group(req.group).await?;
    Ok(Json(serde_json::json!({})))
}

async fn delete_group(State(gw): State<Gateway>, Path(group): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let deleted = gw.registry.delete_group(&group).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

async fn create_measure(State(gw): State<Gateway>, body: Bytes) -> Result<Json<MeasureRegistryServiceCreateResponse>, ApiError> {
    let req: MeasureRegistryServiceCreateRequest = parse(&body)?;
    Ok(Json(MeasureRegistryServiceCreateResponse { mod_revision: gw.create_measure(req.measure).await? }))
}

async fn list_measures(State(gw): State<Gateway>, Path(group): Path<String>) -> Result<Json<MeasureRegistryServiceListResponse>, ApiError> {
    Ok(Json(MeasureRegistryServiceListResponse { measure: gw.registry.list_measures(&group).await? }))
}

async fn get_measure(
    State(gw): State<Gateway>,
    Path((group, name)): Path<(String, String)>,
) -> Result<Json<MeasureRegistryServiceGetResponse>, ApiError> {
    Ok(Json(MeasureRegistryServiceGetResponse { measure: Some(gw.registry.get_measure(&group, &name).await?) }))
}

async fn update_measure(
    State(gw): State<Gateway>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<MeasureRegistryServiceUpdateResponse>, ApiError> {
    let mut req: MeasureRegistryServiceUpdateRequest = parse(&body)?;
    if let Some(m) = req.measure.as_mut() {
        let md = m.metadata.get_or_insert_with(Metadata::default);
        if md.group.is_empty() && md.name.is_empty() {
            md.group = group.clone();
            md.name = name.clone();
        } else if md.group != group || md.name != name {
            return Err(ApiError::invalid("measure.metadata", format!("{}/{} does not match the path {group}/{name}", md.group, md.name)));
        }
    }
    Ok(Json(MeasureRegistryServiceUpdateResponse { mod_revision: gw.update_measure(req.measure).await? }))
}

async fn delete_measure(
    State(gw): State<Gateway>,
    Path((group, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deleted = gw.registry.delete_measure(&group, &name).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

async fn query(State(gw): State<Gateway>, body: Bytes) -> Result<Response, ApiError> {
    let req: QueryRequest = parse(&body)?;
    Ok(Json(gw.query(req).await?).into_response())
}

async fn write(State(gw): State<Gateway>, body: Bytes) -> Result<Response, ApiError> {
    let req: WriteRequest = parse(&body)?;
    let resp = gw.write(req).await;
    let code = match Status::try_from(resp.status) {
        Ok(Status::Succeed) => StatusCode::OK,
        Ok(Status::InvalidArgument) => StatusCode::BAD_REQUEST,
        Ok(Status::NotFound) => StatusCode::NOT_FOUND,
        Ok(Status::ResourceExhausted) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Ok((code, Json(resp)).into_response())
}

async fn compact(State(gw): State<Gateway>) -> Result<Json<serde_json::Value>, ApiError> {
    let r = gw.compact().await?;
    Ok(Json(
        serde_json::to_value(canopy_api::v1::CompactResponse {
            merges: r.merges as u32,
            parts_merged: r.parts_merged as u32,
            parts_expired: r.parts_expired as u32,
            objects_deleted: r.objects_deleted as u32,
            versions_deleted: r.versions_deleted as u32,
        })
        .expect("serializes"),
    ))
}

async fn flush(State(gw): State<Gateway>) -> Result<Json<serde_json::Value>, ApiError> {
    let parts = gw.data.flush().await?;
    Ok(Json(serde_json::json!({ "parts": parts })))
}
