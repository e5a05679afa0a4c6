//! Cluster-internal calls are authenticated: every test cluster runs with
//! `--cluster-secret-file` (see `common/cluster.rs`), so the other cluster
//! tests show the liaison's calls carry it; here a client that reaches an
//! ingester's or querier's port directly is refused without it. And nodes
//! log in to an etcd that has authentication on.

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("ingester")
        .args(&args)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--node-host", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("an ingester without etcd credentials kept running");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("user") || err.to_lowercase().contains("auth") || err.contains("permission"), "{err}");
}
