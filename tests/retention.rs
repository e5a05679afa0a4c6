//! Retention end to end: once a segment is older than the group's TTL its
//! points vanish from query results at once, the compactor drops it from the
//! catalog, and after the GC grace period its objects leave the store; newer
//! data stays. On local disk and on S3.

mod common;

use std::path::PathBuf;

use common::*;

fn part_files(c: &Canopy) -> Vec<PathBuf> {
    Canopy::files_under(&c.objects_dir().join("parts")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "arrow")).collect()
}

async fn retention(backend: Backend) {
    let c = Canopy::start(backend, &["--gc-grace-secs", "6", "--query-timeout-secs", "5", "--compaction-interval-secs", "0"]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    let now = now_nanos();
    let old = samples(5, 20, now - 5 * HOUR, 60_000_000_000, 1);
    let new = samples(5, 20, now - HOUR / 2, 60_000_000_000, 2);
    http.write_ok(&write_request(&old, 1)).await;
    http.write_ok(&write_request(&new, 2)).await;
    http.flush().await;
    assert_eq!(total_count(&http, now - 6 * HOUR).await, old.len() + new.len());
    let files_before = part_files(&c);

    // Shrink the TTL to 2 hours: the old points are now expired.
    let (_, g) = http.get("/api/v1/group/schema/g").await;
    let mut group = g["group"].clone();
    group["resourceOpts"]["ttl"] = serde_json::json!({"unit": "UNIT_HOUR", "num": 2});
    let (s, r) = http.put("/api/v1/group/schema/g", &serde_json::json!({"group": group})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(total_count(&http, now - 6 * HOUR).await, new.len(), "expired points are hidden before any deletion");

    let (s, r) = http.post_raw("/api/v1/admin/compact", String::new()).await;
    assert_eq!(s, 200, "{r}");
    let expired = r["partsExpired"].as_u64().unwrap() as usize;
    assert!(expired >= 3, "old data spans 2 segments x up to 3 shards: {r}");
    assert_eq!(part_files(&c).len(), files_before.len(), "objects stay through the grace period");

    // Past the grace period (the GC grace must exceed the query timeout: a
    // query may still read the parts) a later pass deletes them.
    let deleted = std::sync::atomic::AtomicUsize::new(0);
    let seen = || format!("{} of {expired} expired objects deleted", deleted.load(std::sync::atomic::Ordering::Relaxed));
    wait_until(60, "the expired parts were never deleted", seen, || async {
        let (s, r) = http.post_raw("/api/v1/admin/compact", String::new()).await;
        assert_eq!(s, 200, "{r}");
        // proto3 JSON leaves a zero count out.
        let now_deleted = r["objectsDeleted"].as_u64().unwrap_or(0) as usize;
        deleted.fetch_add(now_deleted, std::sync::atomic::Ordering::Relaxed) + now_deleted >= expired
    })
    .await;
    let files_after = part_files(&c);
    assert_eq!(files_after.len(), files_before.len() - expired, "{files_before:?} -> {files_after:?}");
    assert_eq!(total_count(&http, now - 6 * HOUR).await, new.len(), "newer data stays");
}

#[tokio::test]
async fn retention_on_local_disk() {
    retention(Backend::Local).await;
}

#[tokio::test]
async fn retention_on_s3() {
    retention(Backend::S3).await;
}
