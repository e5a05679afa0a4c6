//! What a query costs in object-store requests and bytes, against a real S3
//! server (s3s-fs), read from the process' own counters at `/metrics`: a
//! query whose criteria match no part fetches nothing (the catalog rules the
//! parts out), and a query of one field of ten downloads a small fraction
//! of the parts it scans.

mod common;

use canopy_api::v1::query_request::{Aggregation, GroupBy};
use canopy_api::v1::*;
use common::*;

const HOSTS: usize = 50;
const POINTS: usize = 2160;

/// `(requests, bytes)` of object-store GETs so far.
async fn gets(http: &Http) -> (u64, u64) {
    let (_, text) = http.get_text("/metrics").await;
    let read = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{role=\"standalone\",op=\"get\"}} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            .parse()
            .unwrap()
    };
    (read("canopy_object_store_requests_total"), read("canopy_object_store_bytes_total"))
}

fn max_of(field: &str, criteria: Option<Criteria>, begin: i64) -> QueryRequest {
    QueryRequest {
        groups: vec!["bench".into()],
        name: "cpu".into(),
        time_range: time_range(begin, now_nanos() + HOUR),
        criteria,
        group_by: Some(GroupBy { tag_projection: None, field_name: String::new(), bucket_millis: 0 }),
        agg: Some(Aggregation { function: AggregationFunction::Max as i32, field_name: field.into(), field_names: vec![] }),
        ..Default::default()
    }
}

#[tokio::test]
async fn queries_fetch_only_the_parts_and_columns_their_criteria_and_fields_need() {
    let c = Canopy::start(Backend::S3, &[]);
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
    // of any part. (The ingester's catalog refresh reads a few bytes of
    // catalog hint every 5 s in the background; a part's footer alone is
    // kilobytes.)
    let before = gets(&http).await;
    let none = max_of("f3", Some(cond("hostname", BinaryOp::Eq, tag_str("host_999"))), base);
    assert!(http.query(&none).await.data_points.is_empty());
    let after = gets(&http).await;
    assert!(after.1 - before.1 < 64, "a query no part can answer read {} bytes in {} GETs", after.1 - before.1, after.0 - before.0);

    // One field of ten, every host: warm (footers cached), each part scanned.
    let q = max_of("f3", None, base);
    let got = http.query(&q).await;
    assert_eq!(field_of(&got.data_points[0], "f3"), max_f3);
    let before = gets(&http).await;
    assert_eq!(field_of(&http.query(&q).await.data_points[0], "f3"), max_f3);
    let after = gets(&http).await;
    let part_bytes: u64 = Canopy::files_under(&c.objects_dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let (requests, bytes) = (after.0 - before.0, after.1 - before.1);
    println!("one field of ten: {requests} GETs, {bytes} of {part_bytes} part bytes");
    assert!(requests > 0, "the query read no part");
    assert!(bytes * 5 <= part_bytes, "one field of ten read {bytes} of {part_bytes} bytes (more than 20%)");
}
