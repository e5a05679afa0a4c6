//! The function answers a fragment exactly as the points written say (a
//! brute-force sum per series), repeated invocations are served by its part
//! cache, and a malformed invocation is an error naming the problem.

use std::sync::Arc;

use canopy_api::cluster::v1::ExecuteShardRequest;
use canopy_api::v1::query_request::{Aggregation, GroupBy};
use canopy_api::v1::*;
use canopy_ingester::{Ingester, IngesterConfig};
use canopy_lambda::{Function, Invocation};
use canopy_model::{FieldVal, QueryPlan, TagVal, testing, validate_batch};
use canopy_querier::CacheConfig;
use canopy_storage::CatalogStore;

const HOUR: i64 = 3_600_000_000_000;

#[tokio::test]
async fn a_fragment_answers_like_the_points_written_and_a_repeat_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let schema = Arc::new(testing::compile(
        &testing::group("g", 1, 1, 1),
        &testing::measure("g", "m", &[("s", TagType::String)], &[("v", FieldType::Int)], &["s"]),
    ));
    let now = canopy_model::now_nanos();
    let start = (now / HOUR - 3) * HOUR;
    // 3 hours, a point a minute for each of five series: parts in three segments.
    let dps: Vec<DataPointValue> = (0..900)
        .map(|i| DataPointValue {
            timestamp: Some(canopy_model::nanos_to_timestamp(start + (i / 5) * 60_000_000_000)),
            tag_families: vec![TagFamilyForWrite { tags: vec![TagVal::Str(format!("s{}", i % 5)).to_proto()] }],
            fields: vec![FieldVal::Int(i).to_proto()],
            version: 0,
        })
        .collect();
    let (points, rejected) = validate_batch(&schema, &dps, now);
    assert!(rejected.is_empty());
    let ing = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store.clone()).await.unwrap();
    ing.write(&schema, points).await.unwrap();
    assert!(ing.flush_all().await.unwrap() >= 3);
    let version = CatalogStore::new(store.clone()).load_latest("g", 0).await.unwrap().version;

    let req = QueryRequest {
        groups: vec!["g".into()],
        name: "m".into(),
        time_range: Some(TimeRange {
            begin: Some(canopy_model::nanos_to_timestamp(start)),
            end: Some(canopy_model::nanos_to_timestamp(now + HOUR)),
        }),
        group_by: Some(GroupBy {
            tag_projection: Some(TagProjection {
                tag_families: vec![tag_projection::TagFamily { name: "d".into(), tags: vec!["s".into()] }],
            }),
            field_name: "v".into(),
            bucket_millis: 0,
        }),
        agg: Some(Aggregation { function: AggregationFunction::Sum as i32, field_name: "v".into(), field_names: vec![] }),
        ..Default::default()
    };
    let plan = QueryPlan::compile(schema.clone(), &req, now).unwrap();
    let fragment = ExecuteShardRequest {
        fragment: Some(canopy_cluster::fragment_of(&plan)),
        shard: 0,
        catalog_version: version,
        mem_rows: canopy_model::wire::encode_rows(&[]),
        part_paths: vec![],
    };
    let f = Function::new(store, &CacheConfig { memory_bytes: 16 << 20, dir: None, disk_bytes: 0 }).await.unwrap();

    let mut misses = Vec::new();
    for _ in 0..2 {
        let answer = f.handle(Invocation::of(&fragment)).await.unwrap().decode().unwrap();
        let partial = canopy_model::wire::decode_partial(&answer.partial).expect("a partial result");
        let mut got: Vec<(String, i64)> = canopy_querier::finish(&plan, partial)
            .iter()
            .map(|d| {
                let s = match d.tag_families[0].tags[0].value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(tag_value::Value::Str(s)) => s.value.clone(),
                    other => panic!("tag {other:?}"),
                };
                let v = match d.fields[0].value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(field_value::Value::Int(i)) => i.value,
                    other => panic!("field {other:?}"),
                };
                (s, v)
            })
            .collect();
        got.sort();
        let want: Vec<(String, i64)> = (0..5).map(|s| (format!("s{s}"), (0..900).filter(|i| i % 5 == s).sum())).collect();
        assert_eq!(got, want);
        let stats = answer.stats.expect("the fragment's cost");
        assert!(stats.parts_scanned >= 3, "{stats:?}");
        misses.push(stats.cache_misses);
    }
    assert!(misses[0] > 0 && misses[1] == 0, "the repeat should be served from the cache: misses {misses:?}");
    assert!(f.cache_counters().memory_hits() > 0);

    let err = f.handle(Invocation { request: "not base64!".into() }).await.unwrap_err();
    assert!(err.starts_with("request"), "{err}");
}
