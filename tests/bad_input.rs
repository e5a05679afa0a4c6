//! Done-means 4: malformed JSON, wrong types, unknown measures and
//! out-of-TTL timestamps get a 4xx / INVALID_ARGUMENT that names the
//! problem, and the valid points of the same batch are stored.

mod common;

use canopy_api::v1::query_request::{Aggregation, GroupBy};
use canopy_api::v1::*;
use common::*;

fn err_text(body: &serde_json::Value) -> String {
    body.to_string()
}

async fn bad_input(backend: Backend) {
    let c = Canopy::start(backend, &[]);
    let http = Http::new(c.http);
    create_schema(&http).await;
    let now = now_nanos();
    let good = samples(4, 5, now - HOUR, 1_000_000_000, 5);

    // Malformed JSON: 400 saying where.
    let (s, b) = http.post_raw("/api/v1/measure/write", r#"{"metadata": {"group": "g", "name": "cpu"}, "dataPoints": [ {"#.into()).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "INVALID_ARGUMENT");
    assert!(err_text(&b).contains("invalid JSON") && err_text(&b).contains("line 1"), "{b}");
    let (s, b) = http.post_raw("/api/v1/measure/data", "not json".into()).await;
    assert_eq!(s, 400, "{b}");

    // A batch mixing good points with a wrong tag type, a wrong field type,
    // a missing entity tag, an expired and a missing timestamp.
    let mut req = write_request(&good, 9);
    let mut wrong_tag = point(&good[0]);
    wrong_tag.tag_families[0].tags[1] = TagValue { value: Some(tag_value::Value::Int(Int { value: 3 })) };
    let mut wrong_field = point(&good[1]);
    wrong_field.fields[1] = FieldValue { value: Some(field_value::Value::Str(Str { value: "x".into() })) };
    let mut no_entity = point(&good[2]);
    no_entity.tag_families[0].tags[0] = TagValue { value: None };
    let mut expired = point(&good[3]);
    expired.timestamp = Some(ts(now - 30 * 24 * HOUR));
    let mut no_time = point(&good[4]);
    no_time.timestamp = None;
    let bad = [wrong_tag, wrong_field, no_entity, expired, no_time];
    let first_bad = req.data_points.len();
    req.data_points.extend(bad.iter().cloned());
    let (s, b) = http.post("/api/v1/measure/write", &req).await;
    assert_eq!(s, 400, "{b}");
    let resp: WriteResponse = serde_json::from_value(b.clone()).unwrap();
    assert_eq!(resp.status(), Status::InvalidArgument);
    assert_eq!(resp.accepted as usize, good.len());
    let fields: Vec<(u32, &str, &str)> = resp.errors.iter().map(|e| (e.index, e.field.as_str(), e.message.as_str())).collect();
    let f = first_bad as u32;
    assert_eq!(fields.len(), 5, "{fields:?}");
    assert!(fields[0].0 == f && fields[0].1.contains("tags[1] (region)") && fields[0].2.contains("TAG_TYPE_STRING"), "{fields:?}");
    assert!(fields[1].0 == f + 1 && fields[1].1.contains("fields[1] (count)") && fields[1].2.contains("FIELD_TYPE_INT"), "{fields:?}");
    assert!(fields[2].1.contains("host") && fields[2].2.contains("entity"), "{fields:?}");
    assert!(fields[3].1.contains("timestamp") && fields[3].2.contains("TTL"), "{fields:?}");
    assert!(fields[4].1.contains("timestamp") && fields[4].2.contains("required"), "{fields:?}");

    // The same over gRPC: a status per message, the stream goes on.
    let more = samples(4, 5, now - HOUR / 2, 1_000_000_000, 6);
    let mut mixed = write_request(&more, 1);
    mixed.data_points.push(bad[0].clone());
    let mut unknown = write_request(&more, 2);
    unknown.metadata.as_mut().unwrap().name = "nope".into();
    let resps = grpc_write(c.grpc, vec![mixed, unknown, write_request(&more[..1], 3)]).await;
    assert_eq!(resps[0].status(), Status::InvalidArgument);
    assert_eq!(resps[0].accepted as usize, more.len());
    assert!(resps[0].errors[0].field.contains("region"));
    assert_eq!(resps[1].status(), Status::NotFound);
    assert!(resps[1].message.contains("g/nope"), "{:?}", resps[1]);
    assert_eq!(resps[2].status(), Status::Succeed);

    // Unknown measure over HTTP: 404 naming it.
    let mut req = write_request(&good, 1);
    req.metadata.as_mut().unwrap().name = "nope".into();
    let (s, b) = http.post("/api/v1/measure/write", &req).await;
    assert_eq!(s, 404, "{b}");
    assert!(err_text(&b).contains("g/nope"), "{b}");

    // Every accepted point is queryable, nothing else is.
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: time_range(now - 2 * HOUR, now + HOUR),
        group_by: Some(GroupBy { tag_projection: Some(projection("default", &["host"])), field_name: "count".into(), bucket_millis: 0 }),
        agg: Some(Aggregation { function: AggregationFunction::Count as i32, field_name: "count".into(), field_names: vec![] }),
        ..Default::default()
    };
    let q_again = q.clone();
    let got = http.query(&q).await;
    let total: f64 = got.data_points.iter().map(|d| field_of(d, "count")).sum();
    assert_eq!(total as usize, good.len() + more.len());

    // Bad queries name the field, over HTTP (400) and gRPC (INVALID_ARGUMENT).
    let mut no_range = q.clone();
    no_range.time_range = None;
    let (s, b) = http.post("/api/v1/measure/data", &no_range).await;
    assert_eq!(s, 400, "{b}");
    assert!(err_text(&b).contains("time_range"), "{b}");
    let mut bad_tag = q.clone();
    bad_tag.criteria = Some(cond("colour", BinaryOp::Eq, tag_str("red")));
    let status = grpc_query(c.grpc, bad_tag).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("criteria.condition.name") && status.message().contains("colour"), "{status:?}");
    let mut bad_type = q.clone();
    bad_type.criteria = Some(cond("host", BinaryOp::Eq, TagValue { value: Some(tag_value::Value::Int(Int { value: 1 })) }));
    let (s, b) = http.post("/api/v1/measure/data", &bad_type).await;
    assert_eq!(s, 400, "{b}");
    assert!(err_text(&b).contains("criteria.condition.value"), "{b}");
    let mut unknown_measure = q;
    unknown_measure.name = "nope".into();
    let (s, _) = http.post("/api/v1/measure/data", &unknown_measure).await;
    assert_eq!(s, 404);

    // Bad schemas name the field too.
    let (s, b) = http
        .post_raw(
            "/api/v1/group/schema",
            r#"{"group": {"metadata": {"name": "x"}, "catalog": "CATALOG_MEASURE", "resourceOpts": {"shardNum": 0}}}"#.into(),
        )
        .await;
    assert_eq!(s, 400);
    assert!(err_text(&b).contains("shard_num"), "{b}");
    let (s, b) = http
        .post_raw(
            "/api/v1/measure/schema",
            r#"{"measure": {"metadata": {"group": "g", "name": "m2"}, "fields": [{"name": "v", "fieldType": "FIELD_TYPE_INT"}], "entity": {"tagNames": ["missing"]}}}"#.into(),
        )
        .await;
    assert_eq!(s, 400);
    assert!(err_text(&b).contains("entity.tag_names[0]"), "{b}");

    // A TTL or segment width that would wrap around (200000 days of
    // nanoseconds overflows an i64) is refused on create and on update; the
    // group keeps its TTL and its data.
    let group = |name: &str, seg: serde_json::Value, ttl: serde_json::Value| {
        serde_json::json!({"group": {"metadata": {"name": name}, "catalog": "CATALOG_MEASURE",
            "resourceOpts": {"shardNum": 3, "segmentInterval": seg, "ttl": ttl}}})
    };
    let (hour, week) = (serde_json::json!({"unit": "UNIT_HOUR", "num": 1}), serde_json::json!({"unit": "UNIT_DAY", "num": 7}));
    let forever = serde_json::json!({"unit": "UNIT_DAY", "num": 200000});
    let (s, b) = http.post("/api/v1/group/schema", &group("long", hour.clone(), forever.clone())).await;
    assert_eq!(s, 400, "{b}");
    assert!(err_text(&b).contains("resource_opts.ttl.num") && err_text(&b).contains("100 years"), "{b}");
    let (s, b) = http
        .post("/api/v1/group/schema", &group("wide", serde_json::json!({"unit": "UNIT_HOUR", "num": 4000000000u32}), week.clone()))
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(err_text(&b).contains("resource_opts.segment_interval.num"), "{b}");
    let (s, b) = http.put(&format!("/api/v1/group/schema/{GROUP}"), &group(GROUP, hour.clone(), forever)).await;
    assert_eq!(s, 400, "{b}");
    assert!(err_text(&b).contains("resource_opts.ttl.num"), "{b}");
    let (_, g) = http.get(&format!("/api/v1/group/schema/{GROUP}")).await;
    assert_eq!(g["group"]["resourceOpts"]["ttl"]["num"], 7, "{g}");
    let got = http.query(&q_again).await;
    assert_eq!(got.data_points.iter().map(|d| field_of(d, "count")).sum::<f64>() as usize, good.len() + more.len());

    // Names that would resolve to another path are refused, naming the field.
    for name in [".", "..", ".hidden"] {
        let (s, b) = http.post("/api/v1/group/schema", &group(name, hour.clone(), week.clone())).await;
        assert_eq!(s, 400, "{name}: {b}");
        assert!(err_text(&b).contains("group.metadata.name"), "{name}: {b}");
    }
}

#[tokio::test]
async fn bad_input_on_local_disk() {
    bad_input(Backend::Local).await;
}

#[tokio::test]
async fn bad_input_on_s3() {
    bad_input(Backend::S3).await;
}

/// Limits answer with the HTTP status docs/api.md documents, end to end:
/// the memtable budget refuses a write with 429 RESOURCE_EXHAUSTED (and
/// after a flush the same write is accepted, nothing acknowledged lost); a
/// query asking for more rows than the maximum gets 400 naming `limit`.
#[tokio::test]
async fn limits_answer_their_documented_http_statuses() {
    let c =
        // Uploads stall, so the flushes the budget starts cannot keep up.
        Canopy::start(
            Backend::Local,
            &["--memory-budget-bytes", "65536", "--flush-bytes", "1073741824", "--flush-interval-secs", "3600", "--fault-stall-uploads-ms", "1000"],
        );
    let http = Http::new(c.http);
    create_schema(&http).await;
    let now = now_nanos();
    let all = samples(25, 200, now - HOUR, 1_000_000_000, 11);
    let mut acked = 0;
    let mut refused = None;
    for (i, chunk) in all.chunks(100).enumerate() {
        let (s, b) = http.post("/api/v1/measure/write", &write_request(chunk, i as u64)).await;
        if s != 200 {
            refused = Some((s, b, chunk));
            break;
        }
        acked += chunk.len();
    }
    let (s, b, chunk) = refused.expect("the memtable budget never refused a write");
    assert_eq!(s, 429, "{b}");
    let resp: WriteResponse = serde_json::from_value(b.clone()).unwrap();
    assert_eq!(resp.status(), Status::ResourceExhausted, "{b}");
    assert!(resp.message.contains("limit"), "{b}");
    // Flushing frees the budget (the budget's own flush may have written the
    // parts already; this waits for it either way).
    http.flush().await;
    http.write_ok(&write_request(chunk, 999)).await;
    assert_eq!(total_count(&http, now - 2 * HOUR).await, acked + chunk.len(), "a refused write stores nothing, an acknowledged one stays");

    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: time_range(now - 2 * HOUR, now),
        limit: canopy_model::LIMIT_MAX + 1,
        ..Default::default()
    };
    let (s, b) = http.post("/api/v1/measure/data", &q).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "INVALID_ARGUMENT", "{b}");
    assert!(b["message"].as_str().is_some_and(|m| m.starts_with("limit")), "{b}");
}
