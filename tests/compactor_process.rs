//! Several `canopy compactor` processes on the same store at once, beside a
//! running server: segments end compacted, every query answer is unchanged,
//! and no claim is left behind. On local disk and on S3.

mod common;

use std::collections::BTreeMap;

use canopy_api::v1::*;
use common::*;

async fn all_rows(http: &Http, begin: i64) -> BTreeMap<(String, i64), f64> {
    try_all_rows(http, begin).await.unwrap_or_else(|e| panic!("query failed: {e}"))
}

async fn try_all_rows(http: &Http, begin: i64) -> Result<BTreeMap<(String, i64), f64>, serde_json::Value> {
    let mut out = BTreeMap::new();
    for h in 0..5 {
        let q = QueryRequest {
            groups: vec![GROUP.into()],
            name: MEASURE.into(),
            time_range: time_range(begin, now_nanos() + HOUR),
            criteria: Some(cond("host", BinaryOp::Eq, tag_str(&format!("host-{h:03}")))),
            tag_projection: Some(projection("default", &["host"])),
            field_projection: Some(FieldProjection { names: vec!["usage".into()] }),
            limit: 100_000,
            ..Default::default()
        };
        for d in http.try_query(&q).await?.data_points {
            assert!(out.insert((tag_of(&d, "host"), nanos_of(&d)), field_of(&d, "usage")).is_none(), "duplicate row");
        }
    }
    Ok(out)
}

async fn two_compactors(backend: Backend) {
    let c = Canopy::start(backend, &["--compaction-interval-secs", "0"]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    let start = now_nanos() - 2 * HOUR;
    let mut oracle = Oracle::default();
    // Eight flushes of overlapping data (rewrites at higher versions): 8 parts per segment.
    write_overlapping_rounds(&http, start, 5, 8, &mut oracle).await;
    let before = all_rows(&http, start - 1).await;
    let want: BTreeMap<(String, i64), f64> = oracle.rows.iter().map(|((h, t), s)| ((h.clone(), *t), s.usage)).collect();
    assert_eq!(before, want);
    let parts_before = Canopy::files_under(&c.objects_dir().join("parts")).len();

    let mut a = c.spawn_compactor_once(&[]);
    let mut b = c.spawn_compactor_once(&[]);
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success(), "log:\n{}", c.log());
    for shard in 0..3 {
        let cat = c.newest_catalog(shard);
        assert_eq!(cat["claims"].as_array().unwrap().len(), 0, "no claim left behind: {cat}\nlog:\n{}", c.log());
        let per_segment = c.parts_per_segment(shard);
        assert!(per_segment.values().all(|&n| n <= 4), "shard {shard}: {per_segment:?}");
        assert!(!cat["pending_deletes"].as_array().unwrap().is_empty(), "merged inputs wait for GC");
    }

    // Both compactors' commits are in the catalog; the server answers the
    // same meanwhile, and picks them up within its refresh interval: from
    // then on its answers no longer need the merged-away inputs. Proven by
    // hiding those inputs (as GC will delete them) until a query succeeds
    // without them; with the refresh broken, none ever would.
    assert_eq!(all_rows(&http, start - 1).await, want);
    let inputs: Vec<std::path::PathBuf> = (0..3)
        .flat_map(|shard| c.newest_catalog(shard)["pending_deletes"].as_array().unwrap().clone())
        .map(|d| c.objects_dir().join(d["path"].as_str().unwrap()))
        .collect();
    let hidden = |p: &std::path::Path| p.with_extension("hidden");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        inputs.iter().for_each(|p| std::fs::rename(p, hidden(p)).unwrap());
        let answer = try_all_rows(&http, start - 1).await;
        inputs.iter().for_each(|p| std::fs::rename(hidden(p), p).unwrap());
        match answer {
            Ok(rows) => {
                assert_eq!(rows, want);
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "the server never adopted the compacted catalog: {e}\n{}", c.log()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(all_rows(&http, start - 1).await, want);
    let log = c.log();
    assert!(log.contains("compacted"), "no compaction happened; log:\n{log}");
    let parts_after = Canopy::files_under(&c.objects_dir().join("parts")).len();
    assert!(parts_after > parts_before, "inputs are kept through the GC grace period, outputs added");
}

#[tokio::test]
async fn two_compactor_processes_on_local_disk() {
    two_compactors(Backend::Local).await;
}

#[tokio::test]
async fn two_compactor_processes_on_s3() {
    two_compactors(Backend::S3).await;
}
