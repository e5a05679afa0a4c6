//! What a query costs in object-store requests and bytes, against a real S3
//! server (s3s-fs), read from the process' own counters at `/metrics`: a
//! query whose criteria match no part fetches nothing (the catalog rules the
//! parts out); a query of one field of ten downloads a small fraction of
//! the parts it scans; asked again it downloads nothing (the part cache's
//! memory tier answers), and after a restart the disk tier still does.

mod common;

use canopy_api::v1::query_request::{Aggregation, GroupBy};
use canopy_api::v1::*;
use common::*;

const HOSTS: usize = 50;
const POINTS: usize = 2160;

/// A counter of the standalone process' `/metrics`, by its labels after the role's.
async fn counter(http: &Http, name: &str, labels: &str) -> u64 {
    http.metric(&format!("{name}{{role=\"standalone\"{labels}}}")).await as u64
}

/// `(requests, bytes)` of object-store GETs so far.
async fn gets(http: &Http) -> (u64, u64) {
    (
        counter(http, "canopy_object_store_requests_total", ",op=\"get\"").await,
        counter(http, "canopy_object_store_bytes_total", ",op=\"get\"").await,
    )
}

/// Part-cache `(memory hits, disk hits, misses)` so far.
async fn cache(http: &Http) -> (u64, u64, u64) {
    (
        counter(http, "canopy_cache_hits_total", ",tier=\"memory\"").await,
        counter(http, "canopy_cache_hits_total", ",tier=\"disk\"").await,
        counter(http, "canopy_cache_misses_total", "").await,
    )
}

fn max_of(field: &str, criteria: Option<Criteria>, begin: i64) -> QueryRequest {
    QueryRequest {
        groups: vec!["bench".into()],
        name: "cpu".into(),
        time_range: time_range(begin, now_nanos() + HOUR),
        criteria,
        group_by: Some(GroupBy { tag_projection: None, field_name: String::new(), bucket_millis: 0 }),
        agg: Some(Aggregation { function: AggregationFunction::Max as i32, field_name: field.into(), field_names: vec![] }),
        with_stats: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn queries_fetch_only_the_parts_and_columns_their_criteria_and_fields_need() {
    let mut c = Canopy::start(Backend::S3, &[]);
    let http = Http::new(c.http);
    let base_secs = now_nanos() / 1_000_000_000 - 7 * 3600;
    let base = base_secs * 1_000_000_000;
    // TSBS rows (ten two-decimal random walks per host every 10 s, six
    // hours), so the bytes are those of real-looking gauges.
    let rows = canopy_bench::tsbs::rows(HOSTS, base_secs, POINTS, 1);
    let max_f3 = rows.iter().map(|r| r.values[3]).fold(f64::MIN, f64::max);
    let mut bodies = vec![String::new(); HOSTS];
    for r in &rows {
        let fields: Vec<String> = r.values.iter().enumerate().map(|(f, v)| format!("f{f}={v}")).collect();
        let line = format!("cpu,hostname=host_{},region=r{} {} {}\n", r.host, r.host % 3, fields.join(","), r.ts_secs * 1_000_000_000);
        bodies[r.host].push_str(&line);
    }
    for body in bodies {
        let r = reqwest::Client::new().post(format!("http://{}/write?db=bench", c.http)).body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());
    }
    assert!(http.flush().await > 0);

    // Cold: no footer is cached, yet criteria matching no part read nothing
    // of any part. Judged by the query's own stats: the process' counters
    // also count the ingester's catalog refresh, which reads a catalog
    // version (kilobytes) every 5 s in the background when one changed.
    let none = max_of("f3", Some(cond("hostname", BinaryOp::Eq, tag_str("host_999"))), base);
    let got = http.query(&none).await;
    assert!(got.data_points.is_empty());
    let stats = got.stats.expect("stats asked for");
    assert!(stats.parts_skipped > 0 && stats.parts_scanned == 0, "every part ruled out: {stats:?}");
    assert_eq!((stats.object_store_requests, stats.object_store_bytes), (0, 0), "{stats:?}");
    assert_eq!(stats.cache_misses + stats.cache_memory_hits + stats.cache_disk_hits, 0, "{stats:?}");

    // One field of ten, every host, cold: each part scanned, its footer and
    // that field's columns fetched.
    let q = max_of("f3", None, base);
    let before = gets(&http).await;
    let got = http.query(&q).await;
    assert_eq!(field_of(&got.data_points[0], "f3"), max_f3);
    let after = gets(&http).await;
    let cold = got.stats.expect("stats asked for");
    assert!(cold.parts_scanned > 0 && cold.cache_misses > 0 && cold.cache_memory_hits == 0, "{cold:?}");
    // Its GETs are the process' GETs over the query (a background catalog
    // refresh may add a few of its own).
    assert!(cold.object_store_requests > 0 && cold.object_store_requests <= after.0 - before.0, "{cold:?} vs {before:?} -> {after:?}");
    let part_bytes: u64 = Canopy::files_under(&c.objects_dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // The query's own figures (the process' also count background catalog refreshes).
    let (requests, bytes) = (cold.object_store_requests, cold.object_store_bytes);
    println!("one field of ten: {requests} GETs, {bytes} of {part_bytes} part bytes");
    assert!(requests > 0, "the query read no part");
    assert!(bytes * 5 <= part_bytes, "one field of ten read {bytes} of {part_bytes} bytes (more than 20%)");

    // The same query again: every range it reads comes from the part
    // cache's memory tier; not a byte of a part is fetched.
    let cached = cache(&http).await;
    let got = http.query(&q).await;
    assert_eq!(field_of(&got.data_points[0], "f3"), max_f3);
    let now = cache(&http).await;
    let warm = got.stats.expect("stats asked for");
    assert_eq!((warm.cache_misses, warm.object_store_requests, warm.object_store_bytes), (0, 0, 0), "{warm:?}");
    // Every range the cold query fetched, the warm one found — but the
    // footers (one per part scanned), which it finds parsed in memory.
    assert_eq!(warm.cache_memory_hits + cold.parts_scanned, cold.cache_misses, "{cold:?} then {warm:?}");
    assert_eq!(now.2, cached.2, "a repeated query missed the cache: {cached:?} -> {now:?}");
    assert!(now.0 > cached.0, "no memory hit: {cached:?} -> {now:?}");

    // A restarted process (a new memory tier) reads the same ranges from
    // its disk tier: no part bytes from the store, only the catalog.
    c.stop();
    c.restart();
    let http = Http::new(c.http);
    let got = http.query(&q).await;
    assert_eq!(field_of(&got.data_points[0], "f3"), max_f3);
    let now = cache(&http).await;
    let restarted = got.stats.expect("stats asked for");
    assert_eq!((restarted.cache_misses, restarted.cache_disk_hits), (0, cold.cache_misses), "{restarted:?}");
    assert_eq!(now.2, 0, "after a restart the disk tier should serve every range: {now:?}");
    assert!(now.1 > 0, "no disk hit after a restart: {now:?}");
    assert!(
        restarted.object_store_bytes * 4 < cold.object_store_bytes,
        "after a restart the query read {} bytes in {} GETs (cold: {})",
        restarted.object_store_bytes,
        restarted.object_store_requests,
        cold.object_store_bytes
    );
}
