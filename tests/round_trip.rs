//! Done-means 1 and 5: points written over HTTP and gRPC, across shards and
//! segments, partly flushed to parts and partly only in memtables (with
//! overwrites at higher versions), answer filtered, grouped and aggregated
//! queries exactly as a brute-force computation over what was written —
//! on the local-disk object store and on a real S3 server.

mod common;

use canopy_api::v1::query_request::Aggregation;
use canopy_api::v1::*;
use common::*;

const STEP: i64 = 30_000_000_000;

async fn round_trip(backend: Backend) {
    let c = Canopy::start(backend, &[]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    // 25 hosts x 400 points, 30 s apart: 3h20m, so 4-5 one-hour segments.
    let start = (now_nanos() / HOUR - 4) * HOUR + 123_456_789;
    let all = samples(25, 400, start, STEP, 7);
    assert_eq!(all.len(), 10_000);
    let mut oracle = Oracle::default();
    let (over_http, over_grpc) = all.split_at(5_000);
    for (i, chunk) in over_http.chunks(500).enumerate() {
        http.write_ok(&write_request(chunk, i as u64)).await;
    }
    let reqs: Vec<_> = over_grpc.chunks(500).enumerate().map(|(i, ch)| write_request(ch, 100 + i as u64)).collect();
    let resps = grpc_write(c.grpc, reqs).await;
    assert_eq!(resps.len(), 10);
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.message_id, 100 + i as u64, "responses keep request order");
        assert_eq!(r.status(), Status::Succeed, "{r:?}");
        assert_eq!(r.accepted, 500);
    }
    all.iter().for_each(|s| oracle.add(s));

    let parts = http.flush().await;
    assert!(parts >= 3 * 4, "3 shards x at least 4 segments, got {parts} parts");

    // More writes that stay in memtables: overwrites of flushed points at a
    // higher version, same-version rewrites at version 0 that must not win
    // over version 1, and new points.
    let mut later: Vec<Sample> =
        all.iter().step_by(7).map(|s| Sample { version: 1, usage: s.usage + 1000.0, count: s.count + 1, ..s.clone() }).collect();
    let stale: Vec<Sample> = later.iter().take(100).map(|s| Sample { version: 0, usage: -1.0, ..s.clone() }).collect();
    later.extend(samples(25, 40, start + 400 * STEP, STEP, 9));
    for (i, chunk) in later.chunks(700).enumerate() {
        http.write_ok(&write_request(chunk, i as u64)).await;
    }
    later.iter().for_each(|s| oracle.add(s));
    let resps = grpc_write(c.grpc, vec![write_request(&stale, 1)]).await;
    assert_eq!(resps[0].status(), Status::Succeed);
    stale.iter().for_each(|s| oracle.add(s));

    let range = time_range(start - 1, now_nanos() + HOUR);
    check_against_oracle(&http, &oracle, range).await;
    // gRPC query gives the same answer as HTTP.
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        agg: Some(Aggregation { function: AggregationFunction::Count as i32, field_name: "count".into(), field_names: vec![] }),
        ..Default::default()
    };
    let via_grpc = grpc_query(c.grpc, q.clone()).await.unwrap();
    assert_eq!(via_grpc, http.query(&q).await);
    assert_eq!(field_of(&via_grpc.data_points[0], "count") as usize, oracle.rows.len());
}

#[tokio::test]
async fn round_trip_on_local_disk() {
    round_trip(Backend::Local).await;
}

#[tokio::test]
async fn round_trip_on_s3() {
    round_trip(Backend::S3).await;
}
