//! Ingest from the agents users already run: Prometheus remote write and
//! remote read, InfluxDB line protocol. Schemas are created on the fly
//! ([`autoschema`]).

pub(crate) mod autoschema;
mod body;
mod influx;
mod known_series;
mod label_sets;
mod line_protocol;
mod measure_rows;
mod otlp;
mod prometheus;
mod remote_write_decode;

#[cfg(test)]
pub(crate) mod test_support;

pub use autoschema::AgentConfig;
pub(crate) use autoschema::AutoSchema;
pub(crate) use otlp::OtlpService;

use axum::Router;
use axum::routing::post;

use crate::service::Gateway;

/// The agent routes, served on the main HTTP port (and on their own ports).
pub(crate) fn routes() -> Router<Gateway> {
    Router::new()
        .route("/api/v1/write", post(prometheus::remote_write))
        .route("/api/v1/read", post(prometheus::remote_read))
        .route("/write", post(influx::write_v1))
        .route("/api/v2/write", post(influx::write_v2))
        .route("/v1/metrics", post(otlp::http_export))
}

/// The routes of the dedicated InfluxDB port (clients default to 8086):
/// writes, plus the `/ping` and `/query` that Telegraf and the v1 clients
/// call before writing (queries are not served; they get an empty result).
pub(crate) fn influx_routes() -> Router<Gateway> {
    Router::new()
        .route("/write", post(influx::write_v1))
        .route("/api/v2/write", post(influx::write_v2))
        .route("/ping", axum::routing::get(influx::ping).head(influx::ping))
        .route("/health", axum::routing::get(influx::health))
        .route("/query", axum::routing::get(influx::query).post(influx::query))
}

/// The routes of the dedicated OTLP/HTTP port.
pub(crate) fn otlp_http_routes() -> Router<Gateway> {
    Router::new().route("/v1/metrics", post(otlp::http_export))
}
