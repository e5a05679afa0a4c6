//! What every cluster role shares: etcd endpoints, node identity and
//! labels, the internal listeners, registration and the ops endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canopy_cluster::metrics::{RoleMetrics, ops_router};
use canopy_cluster::{ClusterSecret, ClusterView, EtcdAuth, NodeInfo, Registration, Role, SecretCheck, parse_labels};
use canopy_liaison::{HTTP_READ_TIMEOUT_DEFAULT, serve_grpc, serve_http};
use tonic::service::interceptor::InterceptedService;

/// Options of every cluster role.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// etcd endpoints, comma-separated (`http://127.0.0.1:2379`).
    #[arg(long, env = "CANOPY_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub(crate) etcd_endpoints: Vec<String>,
    /// gRPC listen address, `IP:PORT` or `:PORT` for the node's own address
    /// (what its host resolves to). The public API on a liaison (default
    /// `0.0.0.0:17912`); internal services elsewhere (default `:17912`, so
    /// they are not offered on every interface).
    #[arg(long, env = "CANOPY_GRPC_ADDR")]
    grpc_addr: Option<ListenAddr>,
    /// HTTP listen address (`/api/healthz`, `/metrics`; the public API on a
    /// liaison), `IP:PORT` or `:PORT`.
    #[arg(long, env = "CANOPY_HTTP_ADDR", default_value = "0.0.0.0:17913")]
    http_addr: ListenAddr,
    /// The host other nodes reach this one at; the node id is `host:grpc_port`.
    /// Setting it implies `--node-host-provider flag`.
    #[arg(long, env = "CANOPY_NODE_HOST")]
    node_host: Option<String>,
    /// How to find the host when `--node-host` is not set: `hostname` or `ip`
    /// (the address of the interface that routes outwards).
    #[arg(long, env = "CANOPY_NODE_HOST_PROVIDER", default_value = "hostname")]
    node_host_provider: String,
    /// Labels of this node, `k=v,k2=v2` (e.g. `zone=a`); see `--ingester-selector`.
    #[arg(long, env = "CANOPY_NODE_LABELS", default_value = "")]
    node_labels: String,
    /// Seconds without keep-alive after which a crashed node's registration
    /// (and, for an ingester, its shards) is given up.
    #[arg(long, env = "CANOPY_LEASE_TTL_SECS", default_value_t = 10)]
    lease_ttl_secs: u64,
    /// A file holding the cluster secret: every internal call carries it and
    /// ingesters and queriers refuse calls without it. The same on every
    /// node; without it internal calls are not authenticated.
    #[arg(long, env = "CANOPY_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) grpc_limits: crate::args::GrpcLimitArgs,
    /// etcd user, when etcd's authentication is on (`etcdctl auth enable`).
    #[arg(long, env = "CANOPY_ETCD_USER", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// A file holding the etcd user's password.
    #[arg(long, env = "CANOPY_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<std::path::PathBuf>,
    /// The CA (PEM) etcd's certificate is checked against; needed for
    /// `https://` endpoints.
    #[arg(long, env = "CANOPY_ETCD_CA_FILE")]
    etcd_ca_file: Option<std::path::PathBuf>,
    /// This node's certificate (PEM) for etcd's `--client-cert-auth`.
    #[arg(long, env = "CANOPY_ETCD_CERT_FILE", requires_all = ["etcd_key_file", "etcd_ca_file"])]
    etcd_cert_file: Option<std::path::PathBuf>,
    /// The key (PEM) of `--etcd-cert-file`.
    #[arg(long, env = "CANOPY_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    etcd_key_file: Option<std::path::PathBuf>,
}

/// Where a node listens: an address, or a port on the node's own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    At(SocketAddr),
    Own(u16),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        match s.strip_prefix(':') {
            Some(port) => port.parse().map(ListenAddr::Own).map_err(|_| format!("{s:?}: expected :PORT")),
            None => s.parse().map(ListenAddr::At).map_err(|_| format!("{s:?}: expected IP:PORT or :PORT")),
        }
    }
}

impl ListenAddr {
    /// The socket address to bind: `Own` resolves `host` (the address
    /// other nodes are told to use).
    async fn resolve(self, host: &str) -> anyhow::Result<SocketAddr> {
        let port = match self {
            ListenAddr::At(a) => return Ok(a),
            ListenAddr::Own(port) => port,
        };
        // `[fd00::1]` is how an IPv6 host is written in a node id.
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((bare, port)).await.map_err(|e| anyhow::anyhow!("node host {host:?}: {e}"))?.collect();
        let Some(&addr) = addrs.first() else {
            anyhow::bail!("node host {host:?} resolves to no address");
        };
        let loopback_name = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if addr.ip().is_loopback() && !loopback_name {
            // Debian's /etc/hosts maps the hostname to 127.0.1.1, while
            // other machines resolve it to the real address: binding there
            // would leave the node unreachable.
            tracing::warn!(
                %host, %addr,
                "the node's host resolves to a loopback address here: listening on every interface instead; \
                 set --node-host-provider ip, --node-host or an explicit --grpc-addr"
            );
            return Ok(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port));
        }
        if addrs.len() > 1 {
            tracing::info!(%host, %addr, others = ?&addrs[1..], "the node's host has several addresses: listening on the first");
        }
        Ok(addr)
    }
}

/// How to reach etcd: user and TLS from the flags.
fn etcd_access(a: &NodeArgs) -> anyhow::Result<canopy_cluster::EtcdAccess> {
    let auth = match (&a.etcd_user, &a.etcd_password_file) {
        (Some(user), Some(path)) => {
            let password = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(EtcdAuth { user: user.clone(), password: password.trim_end_matches(['\r', '\n']).to_string() })
        }
        _ => None,
    };
    let tls = match &a.etcd_ca_file {
        Some(ca) => {
            let identity = a.etcd_cert_file.as_deref().zip(a.etcd_key_file.as_deref());
            Some(canopy_cluster::EtcdTls::from_files(ca, identity).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    if tls.is_none() && a.etcd_endpoints.iter().any(|e| e.contains("https://")) {
        anyhow::bail!("--etcd-endpoints: https:// needs --etcd-ca-file");
    }
    Ok(canopy_cluster::EtcdAccess { auth, tls })
}

/// A started node: its view of the cluster and bound listeners.
pub(crate) struct Node {
    pub(crate) view: ClusterView,
    /// What internal calls carry and internal services check.
    pub(crate) secret: ClusterSecret,
    /// Calls and request bytes in progress on the internal services.
    grpc_limits: Arc<canopy_liaison::GrpcLimits>,
    pub(crate) info: NodeInfo,
    listeners: Option<(tokio::net::TcpListener, tokio::net::TcpListener)>,
    bound: (SocketAddr, SocketAddr),
    ttl: Duration,
}

fn host(a: &NodeArgs) -> anyhow::Result<String> {
    if let Some(h) = &a.node_host {
        return Ok(h.clone());
    }
    match a.node_host_provider.as_str() {
        "hostname" => {
            let h = std::fs::read_to_string("/proc/sys/kernel/hostname").or_else(|_| std::env::var("HOSTNAME"))?;
            Ok(h.trim().to_string())
        }
        "ip" => {
            // Connecting a UDP socket sends nothing; it only picks the route.
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            s.connect("10.255.255.255:1")?;
            Ok(s.local_addr()?.ip().to_string())
        }
        "flag" => anyhow::bail!("--node-host-provider flag needs --node-host"),
        other => anyhow::bail!("--node-host-provider {other:?}: expected hostname, ip or flag"),
    }
}

impl Node {
    /// Connects to etcd, starts the watches and binds the listeners.
    pub(crate) async fn start(a: &NodeArgs, roles: Vec<Role>) -> anyhow::Result<Node> {
        anyhow::ensure!(!a.etcd_endpoints.is_empty(), "--etcd-endpoints is required");
        let labels = parse_labels(&a.node_labels).map_err(|e| anyhow::anyhow!("--node-labels: {e}"))?;
        let host = host(a)?;
        let secret = match &a.cluster_secret_file {
            Some(path) => ClusterSecret::from_file(path).map_err(anyhow::Error::msg)?,
            None => ClusterSecret::none(),
        };
        let etcd = |e: &dyn std::fmt::Display| anyhow::anyhow!("etcd {}: {e}", a.etcd_endpoints.join(","));
        let client = canopy_cluster::connect(&a.etcd_endpoints, &etcd_access(a)?).await.map_err(|e| etcd(&e))?;
        let view = ClusterView::start(client).await.map_err(|e| etcd(&e))?;
        let public = roles.contains(&Role::Liaison);
        let grpc_addr =
            a.grpc_addr.unwrap_or(if public { ListenAddr::At(SocketAddr::from(([0, 0, 0, 0], 17912))) } else { ListenAddr::Own(17912) });
        let grpc_addr = grpc_addr.resolve(&host).await?;
        let http_addr = a.http_addr.resolve(&host).await?;
        let grpc = tokio::net::TcpListener::bind(grpc_addr).await.map_err(|e| anyhow::anyhow!("--grpc-addr {grpc_addr}: {e}"))?;
        let http = tokio::net::TcpListener::bind(http_addr).await.map_err(|e| anyhow::anyhow!("--http-addr {http_addr}: {e}"))?;
        let (gport, hport) = (grpc.local_addr()?.port(), http.local_addr()?.port());
        let info = NodeInfo {
            id: format!("{host}:{gport}"),
            roles,
            grpc_addr: format!("{host}:{gport}"),
            http_addr: format!("{host}:{hport}"),
            labels,
            started_at_ms: canopy_model::now_nanos() / 1_000_000,
            leaving: false,
            recovering: vec![],
        };
        let bound = (grpc.local_addr()?, http.local_addr()?);
        let grpc_limits = a.grpc_limits.limits(canopy_liaison::HTTP_READ_TIMEOUT_DEFAULT);
        Ok(Node {
            view,
            secret,
            grpc_limits,
            info,
            listeners: Some((grpc, http)),
            bound,
            ttl: Duration::from_secs(a.lease_ttl_secs.max(2)),
        })
    }

    /// An internal service as it is served: the cluster secret checked
    /// first, then within the process's gRPC limits.
    pub(crate) fn internal<S>(&self, service: S) -> InterceptedService<canopy_liaison::GrpcLimited<S>, SecretCheck> {
        InterceptedService::new(self.grpc_limits.wrap(service, &[]), self.secret.checker())
    }

    /// The bound gRPC address.
    pub(crate) fn bound_grpc(&self) -> SocketAddr {
        self.bound.0
    }

    /// The bound HTTP address.
    pub(crate) fn bound_http(&self) -> SocketAddr {
        self.bound.1
    }

    /// The bound (gRPC, HTTP) listeners; once.
    pub(crate) fn take_listeners(&mut self) -> (tokio::net::TcpListener, tokio::net::TcpListener) {
        self.listeners.take().expect("listeners are taken once")
    }

    /// Registers the node (once it serves).
    pub(crate) async fn register(&self) -> anyhow::Result<Registration> {
        Ok(Registration::register(self.view.client.clone(), self.info.clone(), self.ttl).await?)
    }

    /// Serves the role's gRPC services (`router`; none for a compactor) with
    /// the gRPC health service, and `/api/healthz` + `/metrics` over HTTP, on
    /// the bound listeners; then registers the node and announces it.
    pub(crate) async fn serve(
        &mut self,
        role: &str,
        router: Option<tonic::transport::server::Router>,
        metrics: Arc<RoleMetrics>,
    ) -> anyhow::Result<Serving> {
        let (grpc, http) = self.take_listeners();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (_, health) = tonic_health::server::health_reporter();
        let router = match router {
            Some(r) => r.add_service(health),
            None => tonic::transport::Server::builder().add_service(health),
        };
        let tasks = vec![
            serve_grpc(grpc, router, None, stop_rx.clone()),
            serve_http(http, ops_router(metrics), HTTP_READ_TIMEOUT_DEFAULT, None, stop_rx),
        ];
        let registration = Arc::new(self.register().await?);
        self.announce(role);
        Ok(Serving { registration, stop, tasks })
    }

    /// Prints the machine-readable ready line.
    pub(crate) fn announce(&self, role: &str) {
        tracing::info!(node = %self.info.id, role, "ready");
        println!("READY http={} grpc={} node={}", self.bound.1, self.bound.0, self.info.id);
    }
}

/// A node serving and registered; [`Serving::stop`] undoes both.
pub(crate) struct Serving {
    pub(crate) registration: Arc<Registration>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Deregisters, then stops serving.
    pub(crate) async fn stop(self) {
        self.registration.deregister().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The ingester selector flag's parsed form.
pub(crate) fn selector(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    parse_labels(s).map_err(|e| anyhow::anyhow!("--ingester-selector: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(host: &str) -> SocketAddr {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(ListenAddr::Own(17912).resolve(host)).unwrap()
    }

    #[test]
    fn own_addresses_resolve_to_the_nodes_host() {
        assert_eq!(":0".parse::<ListenAddr>().unwrap(), ListenAddr::Own(0));
        assert_eq!("10.0.0.1:9".parse::<ListenAddr>().unwrap(), ListenAddr::At("10.0.0.1:9".parse().unwrap()));
        assert!("17912".parse::<ListenAddr>().is_err());
        assert_eq!(resolve("127.0.0.2"), "127.0.0.2:17912".parse().unwrap());
        assert_eq!(resolve("[::1]"), "[::1]:17912".parse().unwrap(), "an IPv6 node host as node ids write it");
        assert!(resolve("localhost").ip().is_loopback(), "a loopback name means loopback");
    }

    #[test]
    fn a_host_name_mapped_to_loopback_listens_everywhere() {
        // A name /etc/hosts maps to loopback that is not "localhost" (Debian
        // maps the hostname to 127.0.1.1; this machine maps its own).
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let name = hosts
            .lines()
            .filter_map(|l| {
                let mut words = l.split('#').next()?.split_whitespace();
                let ip: std::net::IpAddr = words.next()?.parse().ok()?;
                ip.is_loopback().then(|| words.find(|w| *w != "localhost"))?
            })
            .next()
            .expect("a loopback alias in /etc/hosts")
            .to_string();
        assert!(resolve(&name).ip().is_unspecified(), "{name}");
    }
}
