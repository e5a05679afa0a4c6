//! Binding and serving the HTTP and gRPC front ends.

use std::net::SocketAddr;
use std::time::Duration;

use canopy_api::v1::admin_service_server::AdminServiceServer;
use canopy_api::v1::group_registry_service_server::GroupRegistryServiceServer;
use canopy_api::v1::measure_registry_service_server::MeasureRegistryServiceServer;
use canopy_api::v1::measure_service_server::MeasureServiceServer;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;

use crate::agents::OtlpService;
use crate::grpc_auth::GrpcAuthLayer;
use crate::grpc_limits::GrpcLimits;
use crate::http::{BODY_BYTES_MAX, router};
use crate::http_serve::serve_http;
use crate::service::Gateway;

type GrpcRequest = axum::http::Request<tonic::body::Body>;
type GrpcResponse = axum::http::Response<tonic::body::Body>;

/// Concurrent gRPC requests (streams) per connection.
const GRPC_REQUESTS_PER_CONNECTION_MAX: usize = 64;

/// Where the liaison listens.
#[derive(Debug, Clone)]
pub struct LiaisonConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// OTLP/gRPC (agents default to 4317); `None` disables the extra port
    /// (OTLP/gRPC is also served on `grpc_addr`).
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP (agents default to 4318); `None` disables the extra port
    /// (`/v1/metrics` is also served on `http_addr`).
    pub otlp_http_addr: Option<SocketAddr>,
    /// InfluxDB writes (clients default to 8086); `None` disables the extra
    /// port (`/write` and `/api/v2/write` are also served on `http_addr`).
    pub influx_addr: Option<SocketAddr>,
    /// A client has this long to send a request's headers, and again its body.
    pub http_read_timeout: Duration,
    /// TLS on every port when set (`--tls-cert`, `--tls-key`).
    pub tls: Option<std::sync::Arc<crate::tls::Tls>>,
    /// Calls and request bytes in progress across the gRPC ports.
    pub grpc_limits: std::sync::Arc<GrpcLimits>,
}

/// The one method whose requests stream (batches on one call).
const MEASURE_WRITE: &str = "/canopy.v1.MeasureService/Write";

/// The addresses the liaison bound and the tasks serving them.
#[derive(Debug)]
pub struct Bound {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    pub influx: Option<SocketAddr>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Serves a gRPC router (with or without layers, such as the liaison's
/// token check) on a bound listener until `stop` turns true, over TLS when
/// an acceptor is given (handshakes within [`crate::HTTP_READ_TIMEOUT_DEFAULT`]).
pub fn serve_grpc<L>(
    listener: tokio::net::TcpListener,
    router: tonic::transport::server::Router<L>,
    tls: Option<TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()>
where
    L: tower_layer::Layer<tonic::service::Routes> + Send + 'static,
    L::Service: tower_service::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    <L::Service as tower_service::Service<GrpcRequest>>::Future: Send,
    <L::Service as tower_service::Service<GrpcRequest>>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let served = match tls {
            None => router.serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown).await,
            Some(acceptor) => {
                let incoming = crate::grpc_tls::tls_incoming(listener, acceptor, crate::HTTP_READ_TIMEOUT_DEFAULT);
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    })
}

/// Binds an optional extra port.
async fn bind_optional(addr: Option<SocketAddr>) -> std::io::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(a) => Ok(Some(tokio::net::TcpListener::bind(a).await?)),
        None => Ok(None),
    }
}

/// Binds every listener (so a port conflict fails at start-up) and serves
/// until `shutdown` resolves.
pub async fn start_liaison(cfg: &LiaisonConfig, gw: Gateway, shutdown: tokio::sync::watch::Receiver<bool>) -> std::io::Result<Bound> {
    let http = tokio::net::TcpListener::bind(cfg.http_addr).await?;
    let grpc = tokio::net::TcpListener::bind(cfg.grpc_addr).await?;
    serve_liaison(grpc, http, cfg, gw, shutdown).await
}

/// Serves the liaison on already bound main listeners (their addresses in
/// `cfg` are ignored), binding the optional agent ports.
pub async fn serve_liaison(
    grpc_listener: tokio::net::TcpListener,
    http_listener: tokio::net::TcpListener,
    cfg: &LiaisonConfig,
    gw: Gateway,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Bound> {
    let (http_addr, grpc_addr) = (http_listener.local_addr()?, grpc_listener.local_addr()?);
    let otlp_grpc_listener = bind_optional(cfg.otlp_grpc_addr).await?;
    let otlp_http_listener = bind_optional(cfg.otlp_http_addr).await?;
    let influx_listener = bind_optional(cfg.influx_addr).await?;
    let read = cfg.http_read_timeout;
    let (http_tls, grpc_tls) = match &cfg.tls {
        Some(tls) => (
            Some(tls.acceptor(&[b"h2", b"http/1.1"]).map_err(std::io::Error::other)?),
            Some(tls.acceptor(&[b"h2"]).map_err(std::io::Error::other)?),
        ),
        None => (None, None),
    };
    let mut tasks = Vec::new();
    let mut bound = Bound { http: http_addr, grpc: grpc_addr, otlp_grpc: None, otlp_http: None, influx: None, tasks: Vec::new() };
    if let Some(l) = influx_listener {
        bound.influx = Some(l.local_addr()?);
        tasks.push(serve_http(l, crate::http::influx_router(gw.clone(), read), read, http_tls.clone(), shutdown.clone()));
    }
    if let Some(l) = otlp_http_listener {
        bound.otlp_http = Some(l.local_addr()?);
        tasks.push(serve_http(l, crate::http::otlp_router(gw.clone(), read), read, http_tls.clone(), shutdown.clone()));
    }
    if let Some(l) = otlp_grpc_listener {
        bound.otlp_grpc = Some(l.local_addr()?);
        let svc = MetricsServiceServer::new(OtlpService(gw.clone())).max_decoding_message_size(BODY_BYTES_MAX);
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(GRPC_REQUESTS_PER_CONNECTION_MAX)
            .layer(GrpcAuthLayer(gw.auth.clone()))
            .add_service(cfg.grpc_limits.wrap(svc, &[]));
        tasks.push(serve_grpc(l, router, grpc_tls.clone(), shutdown.clone()));
    }
    tasks.push(serve_http(http_listener, router(gw.clone(), read), read, http_tls, shutdown.clone()));
    let (_, health) = tonic_health::server::health_reporter();
    // Every service but health (answered under any load) within the limits.
    let limits = &cfg.grpc_limits;
    let grpc = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(GRPC_REQUESTS_PER_CONNECTION_MAX)
        .layer(GrpcAuthLayer(gw.auth.clone()))
        .add_service(health)
        .add_service(limits.wrap(GroupRegistryServiceServer::new(gw.clone()), &[]))
        .add_service(limits.wrap(MeasureRegistryServiceServer::new(gw.clone()), &[]))
        .add_service(limits.wrap(MeasureServiceServer::new(gw.clone()).max_decoding_message_size(BODY_BYTES_MAX), &[MEASURE_WRITE]))
        .add_service(limits.wrap(MetricsServiceServer::new(OtlpService(gw.clone())).max_decoding_message_size(BODY_BYTES_MAX), &[]))
        .add_service(limits.wrap(AdminServiceServer::new(gw), &[]));
    tasks.push(serve_grpc(grpc_listener, grpc, grpc_tls, shutdown));
    bound.tasks = tasks;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use tonic::server::NamedService;

    #[test]
    fn the_streaming_method_is_named_as_tonic_routes_it() {
        type Measure = canopy_api::v1::measure_service_server::MeasureServiceServer<crate::Gateway>;
        assert_eq!(super::MEASURE_WRITE, format!("/{}/Write", Measure::NAME));
    }
}
