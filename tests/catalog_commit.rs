//! Catalog commits racing on one version, on local disk and on the test S3
//! server: exactly one writer wins each version and every other gets a
//! conflict, so no commit is silently overwritten (the base of fencing and
//! of compaction claims). This also guards the test S3 server itself: plain
//! s3s-fs decides `If-None-Match: *` with a check-then-write race.

mod common;

use std::sync::Arc;

use canopy_storage::{CatalogState, CatalogStore, ObjectStoreConfig, StorageError, open_object_store};
use common::*;

const WRITERS: usize = 16;
const ROUNDS: u64 = 8;

/// Every round, `WRITERS` tasks commit on the same base version, each
/// recording its name in a watermark; the version stored must be the one
/// commit that was told it succeeded.
async fn racing_commits(store: Arc<dyn object_store::ObjectStore>) {
    let catalogs = CatalogStore::new(store);
    let mut base = CatalogState::empty("race", 0);
    for round in 0..ROUNDS {
        let attempts = (0..WRITERS).map(|w| {
            let (catalogs, base) = (catalogs.clone(), base.clone());
            tokio::spawn(async move {
                let mut next = base.clone();
                next.watermarks.insert(format!("writer-{w}"), round + 1);
                (w, catalogs.commit(&base, next).await)
            })
        });
        let mut winners = Vec::new();
        for a in futures::future::join_all(attempts).await {
            match a.unwrap() {
                (w, Ok(committed)) => winners.push((w, committed)),
                (_, Err(StorageError::CatalogConflict { version, .. })) => assert_eq!(version, round + 1),
                (w, Err(e)) => panic!("writer {w}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: more than one writer was told it committed the same version");
        let (w, committed) = winners.pop().unwrap();
        let stored = catalogs.load_version("race", 0, round + 1).await.unwrap();
        assert_eq!(stored.watermark(&format!("writer-{w}")), round + 1, "round {round}: the winner's commit was overwritten");
        assert_eq!(stored, committed);
        base = committed;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_wins_each_version_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ObjectStoreConfig { url: dir.path().to_str().unwrap().into(), ..Default::default() };
    racing_commits(open_object_store(&cfg).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_wins_each_version_on_s3() {
    let s3 = S3Server::start();
    let cfg = ObjectStoreConfig {
        url: format!("s3://{S3_BUCKET}"),
        s3_endpoint: Some(format!("http://127.0.0.1:{}", s3.port)),
        s3_access_key_id: Some(S3_KEY.into()),
        s3_secret_access_key: Some(S3_SECRET.into()),
        ..Default::default()
    };
    racing_commits(open_object_store(&cfg).unwrap()).await;
}

/// A server that ignores `If-None-Match: *` would turn every commit into
/// last-writer-wins. A role that commits probes the store at start-up and
/// refuses to run on it, saying why; on a store that decides it, it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_create_if_absent_is_refused_at_start_up() {
    let s3 = S3Server::start_ignoring_conditions();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["standalone", "--data-dir"])
        .arg(dir.path())
        .args(["--object-store", &format!("s3://{S3_BUCKET}"), "--s3-endpoint", &format!("http://127.0.0.1:{}", s3.port)])
        .args(["--s3-access-key-id", S3_KEY, "--s3-secret-access-key", S3_SECRET])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--otlp-grpc-addr", "off", "--otlp-http-addr", "off"])
        .args(["--influx-addr", "off"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a store that ignores create-if-absent:\n{stderr}");
    assert!(stderr.contains("If-None-Match"), "the refusal does not say why:\n{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"));
    // The probe leaves nothing behind, and the same options on a store that
    // decides create-if-absent start fine.
    assert!(Canopy::files_under(&s3.bucket_dir()).is_empty(), "{:?}", Canopy::files_under(&s3.bucket_dir()));
    let c = Canopy::start(Backend::S3, &[]);
    assert_eq!(Http::new(c.http).get("/api/healthz").await.0, 200);
}
