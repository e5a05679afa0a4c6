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
