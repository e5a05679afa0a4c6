//! Binding and serving the HTTP and gRPC front ends.

use std::net::SocketAddr;

use canopy_api::v1::admin_service_server::AdminServiceServer;
use canopy_api::v1::group_registry_service_server::GroupRegistryServiceServer;
use canopy_api::v1::measure_registry_service_server::MeasureRegistryServiceServer;
use canopy_api::v1::measure_service_server::MeasureServiceServer;
use tokio::task::JoinHandle;

use crate::http::{BODY_BYTES_MAX, router};
use crate::service::Gateway;

/// Concurrent gRPC requests (streams) per connection.
const GRPC_REQUESTS_PER_CONNECTION_MAX: usize = 64;

/// Where the liaison listens.
#[derive(Debug, Clone)]
pub struct LiaisonConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

/// Binds both listeners (so a port conflict fails at start-up) and serves
/// until `shutdown` resolves. Returns the bound addresses and the tasks.
pub async fn start_liaison(
    cfg: &LiaisonConfig,
    gw: Gateway,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, SocketAddr, Vec<JoinHandle<()>>)> {
    let http_listener = tokio::net::TcpListener::bind(cfg.http_addr).await?;
    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc_addr).await?;
    let (http_addr, grpc_addr) = (http_listener.local_addr()?, grpc_listener.local_addr()?);

    let mut stop = shutdown.clone();
    let app = router(gw.clone());
    let http = tokio::spawn(async move {
        let serve = axum::serve(http_listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    let mut stop = shutdown;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
    let grpc = tokio::spawn(async move {
        let serve = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(GRPC_REQUESTS_PER_CONNECTION_MAX)
            .add_service(GroupRegistryServiceServer::new(gw.clone()))
            .add_service(MeasureRegistryServiceServer::new(gw.clone()))
            .add_service(MeasureServiceServer::new(gw.clone()).max_decoding_message_size(BODY_BYTES_MAX))
            .add_service(AdminServiceServer::new(gw))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((http_addr, grpc_addr, vec![http, grpc]))
}
