//! A TCP proxy that gives a local server an object store's latency: every
//! response waits `latency` before its first byte, as an S3 GET waits
//! ~20–40 ms for its first byte whatever its size. It works on any
//! request/response protocol over keep-alive connections (HTTP/1.1): the
//! first bytes coming back after the client sent something are held back.
//! Tests also use it to take the store away: while "down", connections are
//! cut and new ones refused, as when a network partition or an outage hits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
pub struct LatencyProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

/// What the proxy does to traffic now; changed while it runs.
#[derive(Debug, Default)]
struct Faults {
    latency_micros: AtomicU64,
    down: AtomicBool,
}

impl Faults {
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_micros.load(Ordering::Relaxed))
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

fn cut() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the proxy is down")
}

impl LatencyProxy {
    /// Proxies `127.0.0.1:<free port>` to `upstream`, delaying each response
    /// by `latency`.
    pub async fn start(upstream: SocketAddr, latency: Duration) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(Faults::default());
        faults.latency_micros.store(latency.as_micros() as u64, Ordering::Relaxed);
        let (counted, shared) = (requests.clone(), faults.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.is_down() {
                    // Refused: closed at once.
                    drop(client);
                    continue;
                }
                let (counted, faults) = (counted.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = pipe(client, server, faults, counted).await;
                    }
                });
            }
        });
        Ok(LatencyProxy { addr, requests, faults, task })
    }

    /// Takes the upstream away (`true`: open connections are cut at their
    /// next byte, new ones closed at once) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::Relaxed);
    }

    /// Changes the delay of each response from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.latency_micros.store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Responses delayed so far (one per request).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways; the first chunk of each response waits the latency;
/// everything stops while the proxy is down.
async fn pipe(client: TcpStream, server: TcpStream, faults: Arc<Faults>, requests: Arc<AtomicU64>) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set when the client sent bytes the server has not answered yet.
    let asked = Arc::new(AtomicBool::new(false));
    let asked_up = asked.clone();
    let faults_up = faults.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return sw.shutdown().await;
            }
            if faults_up.is_down() {
                return Err(cut());
            }
            asked_up.store(true, Ordering::Release);
            sw.write_all(&buf[..n]).await?;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return cw.shutdown().await;
            }
            if asked.swap(false, Ordering::AcqRel) {
                requests.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(faults.latency()).await;
            }
            if faults.is_down() {
                return Err(cut());
            }
            cw.write_all(&buf[..n]).await?;
        }
    };
    // The first error (a cut) ends both directions: the halves are dropped.
    tokio::try_join!(up, down).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_response_waits_and_bytes_pass_unchanged() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let proxy = LatencyProxy::start(upstream, Duration::from_millis(40)).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        for msg in [&b"first"[..], b"second request"] {
            let t = std::time::Instant::now();
            c.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
            assert!(t.elapsed() >= Duration::from_millis(40), "{:?}", t.elapsed());
        }
        assert_eq!(proxy.requests(), 2);
    }
}
