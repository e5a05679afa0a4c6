//! Cluster-internal security. Internal calls are authenticated: every test
//! cluster runs with `--cluster-secret-file` (see `common/cluster.rs`), so
//! the other cluster tests show the liaison's calls carry it; here a client
//! that reaches an ingester's or querier's port directly is refused without
//! it. Nodes log in to an etcd that has authentication on, and reach one
//! over TLS that checks client certificates. Internal ports listen on the
//! node's own address only.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canopy_api::cluster::v1::ingester_service_client::IngesterServiceClient;
use canopy_api::cluster::v1::querier_service_client::QuerierServiceClient;
use canopy_api::cluster::v1::{ExecuteShardRequest, IngestRequest};
use common::*;

fn with_secret<T>(secret: Option<&str>, msg: T) -> tonic::Request<T> {
    grpc_request(msg, "x-canopy-cluster-secret", secret.map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_services_refuse_calls_without_the_cluster_secret() {
    let c = Cluster::start(1, &[]);
    let http = Http::new(c.liaison.http);
    create_schema(&http).await;
    let now = now_nanos();
    let batch = samples(3, 4, now - HOUR / 2, 1_000_000_000, 9);
    http.write_ok(&write_request(&batch, 1)).await;
    assert_eq!(total_count(&http, now - HOUR).await, batch.len(), "the liaison's internal calls carry the secret");

    let mut ingester = IngesterServiceClient::connect(format!("http://{}", c.ingesters[0].grpc)).await.unwrap();
    let garbage = || IngestRequest { batch: vec![1, 2, 3] };
    for secret in [None, Some("not-the-secret")] {
        let err = ingester.ingest(with_secret(secret, garbage())).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "Ingest with {secret:?}: {err:?}");
    }
    // With the secret the call gets through to the decoder, which refuses garbage.
    let err = ingester.ingest(with_secret(Some(CLUSTER_SECRET), garbage())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let mut querier = QuerierServiceClient::connect(format!("http://{}", c.queriers[0].grpc)).await.unwrap();
    let err = querier.execute_shard(with_secret(None, ExecuteShardRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = querier.execute_shard(with_secret(Some(CLUSTER_SECRET), ExecuteShardRequest::default())).await.unwrap_err();
    assert_ne!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert_eq!(total_count(&http, now - HOUR).await, batch.len(), "nothing the refused calls sent was stored");
}

fn etcdctl(endpoint: &str, args: &[&str]) {
    let out = Command::new(std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into()))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn nodes_log_in_to_an_etcd_with_authentication_on() {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    etcdctl(&ep, &["user", "add", "root:etcd-pw-31", "--interactive=false"]);
    etcdctl(&ep, &["user", "grant-role", "root", "root"]);
    etcdctl(&ep, &["auth", "enable"]);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "etcd-pw-31\n").unwrap();
    let objects = dir.path().join("objects");
    let mut args: Vec<String> = ["--etcd-endpoints", &ep, "--object-store"].map(String::from).to_vec();
    args.push(objects.to_string_lossy().into_owned());
    args.extend(["--data-dir".into(), dir.path().join("wal").to_string_lossy().into_owned()]);

    // With the user and password it starts (it waits for READY).
    let mut with = args.clone();
    with.extend(["--etcd-user".into(), "root".into(), "--etcd-password-file".into(), password.to_string_lossy().into_owned()]);
    let node = RoleProcess::start_with_env("ingester", with, vec![], dir.path().join("ingester.log"));
    drop(node);

    // Without them it stops with etcd's refusal.
    let err = fails_to_start("ingester", &args);
    assert!(err.to_lowercase().contains("user") || err.to_lowercase().contains("auth") || err.contains("permission"), "{err}");
}

/// Runs a role that must stop by itself (within 30 s); its stderr.
fn fails_to_start(role: &str, args: &[String]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg(role)
        .args(args)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--node-host", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{role} {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn nodes_reach_etcd_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "etcd-ca");
    let (server_cert, server_key) = ca.issue("etcd-server");
    let (node_cert, node_key) = ca.issue("canopy-node");
    let etcd = EtcdServer::start_tls(&server_cert, &server_key, &ca.cert);
    let ep = etcd.endpoint();
    assert!(ep.starts_with("https://"));
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut args = strings(&["--etcd-endpoints", &ep, "--object-store", &path(&dir.path().join("objects"))]);
    args.extend(strings(&["--data-dir", &path(&dir.path().join("wal")), "--etcd-ca-file", &path(&ca.cert)]));

    // With the CA and a client certificate it registers (READY comes after).
    let mut with = args.clone();
    with.extend(strings(&["--etcd-cert-file", &path(&node_cert), "--etcd-key-file", &path(&node_key)]));
    let node = RoleProcess::start_with_env("ingester", with, vec![], dir.path().join("ingester.log"));
    drop(node);

    // etcd refuses a client without a certificate; a CA is needed for https.
    let err = fails_to_start("ingester", &args);
    assert!(err.contains(&format!("etcd {ep}")), "{err}");
    let no_ca: Vec<String> = args.iter().take(args.len() - 2).cloned().collect();
    let err = fails_to_start("ingester", &no_ca);
    assert!(err.contains("--etcd-ca-file"), "{err}");
}

#[test]
fn internal_ports_listen_on_the_nodes_own_address() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.2 is this machine too, but not 127.0.0.1: what the node
    // binds is told apart from "every interface".
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("querier")
        .args(["--etcd-endpoints", &etcd.endpoint(), "--node-host", "127.0.0.2", "--grpc-addr", ":0", "--http-addr", "127.0.0.1:0"])
        .arg("--object-store")
        .arg(dir.path().join("objects"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let grpc: std::net::SocketAddr =
        line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")).unwrap_or_else(|| panic!("no READY line: {line:?}")).parse().unwrap();
    assert_eq!(grpc.ip().to_string(), "127.0.0.2", "{line}");
    assert!(line.contains(&format!("node=127.0.0.2:{}", grpc.port())), "{line}");
    assert!(std::net::TcpStream::connect(grpc).is_ok(), "served on its own address");
    let everywhere = std::net::TcpStream::connect(("127.0.0.1", grpc.port()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(everywhere.is_err(), "the internal port answered on another address");
}
