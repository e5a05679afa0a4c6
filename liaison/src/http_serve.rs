//! Serving HTTP: hyper's connection loop, with what `axum::serve` does not
//! expose — a deadline for a request's headers, HTTP/2 keep-alive, and a
//! graceful shutdown that lets requests in flight finish (bounded).
//! Together with the body deadline (`http.rs`), a client that trickles a
//! request holds neither a connection task nor a request slot for long.
//! TLS (`tls.rs`) is handshaken in each connection's task.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Default time a client has to send a request's headers, and then its body.
pub const HTTP_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest wait at shutdown for requests in flight.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// Serves an HTTP router on a bound listener until `stop` turns true, over
/// TLS when an acceptor is given; a connection that has not sent a request's
/// headers (or finished its TLS handshake) within `read_timeout` is closed.
pub fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    read_timeout: Duration,
    tls: Option<TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut builder = ConnBuilder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
        builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(20)).keep_alive_timeout(Duration::from_secs(10));
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        loop {
            let socket = tokio::select! {
                socket = accept(&listener, "HTTP") => socket,
                // The watch's guard must not live across the loop's awaits.
                _ = async { stop.wait_for(|s| *s).await.map(drop) } => break,
            };
            let (builder, app, tls, watcher) = (builder.clone(), app.clone(), tls.clone(), graceful.watcher());
            tokio::spawn(async move {
                let service = TowerToHyperService::new(app);
                let served = match tls {
                    None => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(socket), service).into_owned()).await,
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(read_timeout, acceptor.accept(socket)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => return tracing::debug!(error = %e, "HTTP TLS handshake failed"),
                            Err(_) => return tracing::debug!("HTTP TLS handshake timed out"),
                        };
                        watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned()).await
                    }
                };
                // Errors here are a client going away or timing out.
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_MAX, graceful.shutdown()).await.is_err() {
            tracing::warn!("HTTP requests still in flight after {DRAIN_MAX:?} at shutdown; closing them");
        }
    })
}

/// The next connection of `listener` (`what` names the port in logs), with
/// Nagle off. A failed accept (out of file descriptors and the like) is
/// logged and retried after a pause rather than in a spin.
pub(crate) async fn accept(listener: &tokio::net::TcpListener, what: &str) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                return socket;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a {what} connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
