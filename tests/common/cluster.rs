//! A Canopy cluster of separate processes for tests: a real etcd, a real S3
//! server (s3s-fs), and `canopy liaison` / `ingester` / `querier` processes
//! on fixed loopback ports (so a restarted node keeps its identity).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::process::{S3_BUCKET, S3_KEY, S3_SECRET, S3Server, free_port, kill9_child, print_log_if_failing, stop_child, wait_ready};

/// A single-member etcd on loopback.
pub struct EtcdServer {
    child: Option<Child>,
    pub port: u16,
    peer: u16,
    dir: tempfile::TempDir,
    /// Certificate, key and the CA clients' certificates must chain to.
    tls: Option<[std::path::PathBuf; 3]>,
}

impl EtcdServer {
    /// Starts etcd; fails the test if it is not installed (the test command
    /// installs Debian's etcd-server).
    pub fn start() -> EtcdServer {
        let mut e = EtcdServer { child: None, port: free_port(), peer: free_port(), dir: tempfile::tempdir().unwrap(), tls: None };
        e.spawn();
        e
    }

    /// Starts etcd serving clients over TLS with `cert`/`key` and accepting
    /// only clients with a certificate issued by `client_ca`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, client_ca: &std::path::Path) -> EtcdServer {
        let tls = Some([cert.to_path_buf(), key.to_path_buf(), client_ca.to_path_buf()]);
        let mut e = EtcdServer { child: None, port: free_port(), peer: free_port(), dir: tempfile::tempdir().unwrap(), tls };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer);
        let bin = std::env::var("ETCD").unwrap_or_else(|_| "etcd".into());
        let mut cmd = Command::new(&bin);
        if let Some([cert, key, ca]) = &self.tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key).arg("--trusted-ca-file").arg(ca).arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "canopy-test", "--data-dir"])
            .arg(self.dir.path().join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("canopy-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install: apt-get install etcd-server): {e}"));
        super::wait::wait_until_blocking(30, "etcd did not start listening", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        self.child = Some(child);
    }

    /// Kills etcd (the data directory stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same data and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill first");
        self.spawn();
    }

    /// The client endpoint.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `etcdctl get --prefix <prefix>` as operators would run it.
    pub fn etcdctl_get_prefix(&self, prefix: &str) -> String {
        let out = Command::new(std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into()))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "get", "--prefix", prefix])
            .output()
            .expect("run etcdctl (install: apt-get install etcd-client)");
        assert!(out.status.success(), "etcdctl failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `canopy <role>` process with fixed ports.
pub struct RoleProcess {
    child: Option<Child>,
    role: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl RoleProcess {
    fn start(role: &'static str, args: Vec<String>, log: PathBuf) -> RoleProcess {
        RoleProcess::start_env(role, args, Vec::new(), log)
    }

    /// Starts `canopy <role>` with extra environment variables, logging to `log`.
    pub fn start_with_env(role: &str, args: Vec<String>, env: Vec<(String, String)>, log: PathBuf) -> RoleProcess {
        // Roles are few and live as long as the test.
        let role: &'static str = Box::leak(role.to_string().into_boxed_str());
        RoleProcess::start_env(role, args, env, log)
    }

    /// Starts with extra environment variables.
    fn start_env(role: &'static str, args: Vec<String>, env: Vec<(String, String)>, log: PathBuf) -> RoleProcess {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut p = RoleProcess { child: None, role, args, env, grpc, http, log };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg(self.role)
            .args(["--grpc-addr", &self.grpc.to_string(), "--http-addr", &self.http.to_string(), "--node-host", "127.0.0.1"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CANOPY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start canopy");
        wait_ready(&mut child, self.role, || self.log_text());
        self.child = Some(child);
    }

    /// The node id (`host:grpc_port`).
    pub fn id(&self) -> String {
        self.grpc.to_string()
    }

    /// The process log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) without waiting.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// SIGKILL, as in a crash.
    pub fn kill9(&mut self) {
        kill9_child(&mut self.child);
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(status) = stop_child(&mut self.child) {
            assert!(status.success(), "canopy {} exited with {status}; log:\n{}", self.role, self.log_text());
        }
    }

    /// Replaces the value after `flag` in this process's options (for the
    /// next restart).
    pub fn set_option(&mut self, flag: &str, value: &str) {
        let i = self.args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} not set"));
        self.args[i + 1] = value.to_string();
    }

    /// Starts again with the same ports, data and options.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        print_log_if_failing(&format!("{} {}", self.role, self.grpc), &self.log_text());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Ingester number `i`, with its own data directory and log under `dir`.
fn start_ingester(dir: &tempfile::TempDir, args: &[String], i: usize) -> RoleProcess {
    let mut args = args.to_vec();
    args.push("--data-dir".into());
    args.push(dir.path().join(format!("ingester-{i}")).to_string_lossy().into_owned());
    RoleProcess::start("ingester", args, dir.path().join(format!("ingester-{i}.log")))
}

/// Lease TTL for a test that wants no ownership change it did not cause: a
/// keep-alive starved for a few seconds on a loaded machine must not move
/// shards under it.
pub const STEADY_LEASE_SECS: u64 = 10;
/// Lease TTL for a test that kills or pauses a node and waits for the
/// take-over (which takes one TTL).
pub const SHORT_LEASE_SECS: u64 = 3;

/// etcd + S3 + 1 liaison + N ingesters + 1 querier.
pub struct Cluster {
    store_args: Vec<String>,
    /// Arguments every ingester of this cluster was started with.
    ingester_args: Vec<String>,
    /// And the liaison.
    liaison_args: Vec<String>,
    pub liaison: RoleProcess,
    pub ingesters: Vec<RoleProcess>,
    pub queriers: Vec<RoleProcess>,
    pub etcd: EtcdServer,
    pub s3: S3Server,
    pub dir: tempfile::TempDir,
}

/// The secret of every test cluster's internal calls.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-5d1e";

impl Cluster {
    /// Starts every process (one querier); `ingester_extra` goes to each ingester.
    pub fn start(ingesters: usize, ingester_extra: &[&str]) -> Cluster {
        Cluster::start_with(ingesters, 1, ingester_extra)
    }

    /// Starts every process with `queriers` queriers, on leases of
    /// [`STEADY_LEASE_SECS`].
    pub fn start_with(ingesters: usize, queriers: usize, ingester_extra: &[&str]) -> Cluster {
        Cluster::start_with_lease(ingesters, queriers, STEADY_LEASE_SECS, ingester_extra)
    }

    /// Starts every process with `queriers` queriers on leases of `lease_secs`.
    pub fn start_with_lease(ingesters: usize, queriers: usize, lease_secs: u64, ingester_extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let etcd = EtcdServer::start();
        let s3 = S3Server::start();
        let store_args: Vec<String> = vec![
            "--object-store".into(),
            format!("s3://{S3_BUCKET}"),
            "--s3-endpoint".into(),
            format!("http://127.0.0.1:{}", s3.port),
            "--s3-access-key-id".into(),
            S3_KEY.into(),
            "--s3-secret-access-key".into(),
            S3_SECRET.into(),
        ];
        // Every test cluster authenticates its internal calls.
        let secret = dir.path().join("cluster-secret");
        std::fs::write(&secret, format!("{CLUSTER_SECRET}\n")).unwrap();
        let mut common: Vec<String> = vec![
            "--etcd-endpoints".into(),
            etcd.endpoint(),
            "--lease-ttl-secs".into(),
            lease_secs.to_string(),
            "--cluster-secret-file".into(),
            secret.to_string_lossy().into_owned(),
        ];
        common.extend(store_args.iter().cloned());
        let mut ingester_args = common.clone();
        ingester_args.extend(ingester_extra.iter().map(|s| s.to_string()));
        let ingesters = (0..ingesters).map(|i| start_ingester(&dir, &ingester_args, i)).collect();
        let queriers = (0..queriers)
            .map(|i| {
                // Each querier's part cache on its own disk, kept across its restarts.
                let mut args = common.clone();
                args.extend(["--cache-dir".into(), dir.path().join(format!("querier-{i}-cache")).to_string_lossy().into_owned()]);
                RoleProcess::start("querier", args, dir.path().join(format!("querier-{i}.log")))
            })
            .collect();
        let mut liaison_args = common;
        liaison_args.extend(["--otlp-grpc-addr", "off", "--otlp-http-addr", "off", "--influx-addr", "off"].map(String::from));
        let liaison = RoleProcess::start("liaison", liaison_args.clone(), dir.path().join("liaison.log"));
        Cluster { store_args, ingester_args, liaison_args, liaison, ingesters, queriers, etcd, s3, dir }
    }

    /// Starts one more ingester with the same options as the others.
    pub fn add_ingester(&mut self) -> &RoleProcess {
        let i = self.ingesters.len();
        self.ingesters.push(start_ingester(&self.dir, &self.ingester_args, i));
        &self.ingesters[i]
    }

    /// Starts another liaison with `extra` options and environment.
    pub fn add_liaison(&self, name: &str, extra: &[String], env: &[(&str, &str)]) -> RoleProcess {
        let mut args = self.liaison_args.clone();
        args.extend(extra.iter().cloned());
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RoleProcess::start_env("liaison", args, env, self.dir.path().join(format!("{name}.log")))
    }

    /// The object-store options every process of this cluster uses.
    pub fn store_args(&self) -> &[String] {
        &self.store_args
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in std::iter::once(&self.liaison).chain(&self.ingesters).chain(&self.queriers) {
            out.push_str(&format!("==== {} {}\n{}\n", p.role, p.id(), p.log_text()));
        }
        out
    }
}
