//! Query scan throughput, warm (footers cached, parts in an in-memory
//! store): a day of the TSBS generator's data — 100 series (10 string tags,
//! 10 two-decimal float fields) at 10 s — in one part, queried as the leaf of
//! one shard. Throughput counts the samples of the aggregated field(s).

use std::sync::Arc;

use canopy_api::v1::query_request::{Aggregation, GroupBy};
use canopy_api::v1::*;
use canopy_model::{ColumnLayout, FieldVal, Point, QueryPlan, TagVal, nanos_to_timestamp, now_nanos, series_id};
use canopy_querier::{Querier, QuerierConfig};
use canopy_storage::part::{MeasureRows, encode_part};
use canopy_storage::{CatalogState, PartMeta};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::{ObjectStore, ObjectStoreExt};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERIES: usize = 100;
const POINTS: usize = 8_640;
/// The TSBS generator's interval, in nanoseconds.
const STEP: i64 = canopy_bench::tsbs::INTERVAL_SECS * 1_000_000_000;

/// The TSBS generator's rows as points of `cpu` (entity `t0`, the host).
fn rows(start: i64) -> Vec<Point> {
    let hosts: Vec<(u64, Vec<TagVal>)> = (0..SERIES)
        .map(|s| {
            let tags: Vec<TagVal> =
                (0..10).map(|i| TagVal::Str(if i == 0 { format!("host_{s}") } else { format!("v{i}-{}", s % (i + 2)) })).collect();
            (series_id("cpu", &tags[..1]), tags)
        })
        .collect();
    let mut rows: Vec<Point> = canopy_bench::tsbs::rows(SERIES, start / 1_000_000_000, POINTS, 1)
        .into_iter()
        .map(|r| Point {
            series: hosts[r.host].0,
            shard: 0,
            ts: r.ts_secs * 1_000_000_000,
            version: 0,
            tags: hosts[r.host].1.clone().into(),
            fields: r.values.iter().map(|&v| FieldVal::Float(v)).collect(),
        })
        .collect();
    rows.sort_by_key(|p| (p.series, p.ts));
    rows
}

fn request(start: i64, end: i64, function: AggregationFunction, fields: &[&str], criteria: Option<Criteria>) -> QueryRequest {
    QueryRequest {
        groups: vec!["g".into()],
        name: "cpu".into(),
        time_range: Some(TimeRange { begin: Some(nanos_to_timestamp(start)), end: Some(nanos_to_timestamp(end)) }),
        criteria,
        group_by: Some(GroupBy { tag_projection: None, field_name: String::new(), bucket_millis: 0 }),
        agg: Some(Aggregation {
            function: function as i32,
            field_name: String::new(),
            field_names: fields.iter().map(|f| f.to_string()).collect(),
        }),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let now = now_nanos();
    let start = (now - (POINTS as i64 + 10) * STEP) / STEP * STEP;
    let tags: Vec<(String, TagType)> = (0..10).map(|i| (format!("t{i}"), TagType::String)).collect();
    let fields: Vec<(String, FieldType)> = (0..10).map(|i| (format!("f{i}"), FieldType::Float)).collect();
    let schema = Arc::new(canopy_model::testing::compile(
        &canopy_model::testing::group("g", 1, 24, 30),
        &canopy_model::testing::measure(
            "g",
            "cpu",
            &tags.iter().map(|(n, t)| (n.as_str(), *t)).collect::<Vec<_>>(),
            &fields.iter().map(|(n, t)| (n.as_str(), *t)).collect::<Vec<_>>(),
            &["t0"],
        ),
    ));
    let layout: Arc<ColumnLayout> = schema.layout.clone();
    let enc = encode_part(&[MeasureRows { name: "cpu".into(), layout, rows: rows(start) }]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    rt.block_on(store.put(&"p".into(), enc.bytes.clone().into())).unwrap();
    let mut catalog = CatalogState::empty("g", 0);
    catalog.parts = vec![PartMeta::new(1, "p".into(), start, start + 2 * POINTS as i64 * STEP, 0, 0, enc.summary)];
    let querier = Querier::new(QuerierConfig::default(), store);
    let end = start + POINTS as i64 * STEP;

    let mut g = c.benchmark_group("scan");
    let mut case = |name: &str, req: QueryRequest, samples: usize| {
        let plan = QueryPlan::compile(schema.clone(), &req, now).unwrap();
        rt.block_on(querier.execute_shard(&plan, &catalog, Vec::new())).unwrap();
        g.throughput(Throughput::Elements(samples as u64));
        g.bench_function(name, |b| b.iter(|| rt.block_on(querier.execute_shard(&plan, &catalog, Vec::new())).unwrap()));
    };
    case("max of one field, all series, a day", request(start, end, AggregationFunction::Max, &["f0"], None), SERIES * POINTS);
    case("sum of one field, all series, a day", request(start, end, AggregationFunction::Sum, &["f0"], None), SERIES * POINTS);
    case(
        "max of ten fields, all series, a day",
        request(start, end, AggregationFunction::Max, &fields.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), None),
        10 * SERIES * POINTS,
    );
    let one_host = Criteria {
        exp: Some(criteria::Exp::Condition(Condition {
            name: "t0".into(),
            op: BinaryOp::Eq as i32,
            value: Some(TagValue { value: Some(tag_value::Value::Str(Str { value: "host_7".into() })) }),
            field_value: None,
        })),
    };
    case("max of one field, one series, a day", request(start, end, AggregationFunction::Max, &["f0"], Some(one_host)), POINTS);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
