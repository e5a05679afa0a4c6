//! Brute-force checks of query answers against an [`Oracle`] (what was
//! written, newest version per point): filtered group sums, bucketed
//! aggregations, raw ordering and paging, top-N, field conditions and
//! multi-field aggregations. Independent of every query code path, so a
//! test comparing two deployments (cluster and standalone) can also check
//! both against what was written.

use std::collections::BTreeMap;

use canopy_api::v1::logical_expression::LogicalOp;
use canopy_api::v1::query_request::{Aggregation, GroupBy, OrderBy, Top};
use canopy_api::v1::*;

use super::client::Http;
use super::workload::*;

/// Runs every check below over `range`.
pub async fn check_against_oracle(http: &Http, oracle: &Oracle, range: Option<TimeRange>) {
    check_filtered_group_sum(http, oracle, range).await;
    check_bucketed_aggregations(http, oracle, range).await;
    check_raw_ordering(http, oracle, range).await;
    check_top_n(http, oracle, range).await;
    check_field_conditions_and_multi_field_aggregations(http, oracle, range).await;
}

pub async fn check_filtered_group_sum(http: &Http, oracle: &Oracle, range: Option<TimeRange>) {
    // (region in [eu, ap] OR host == host-001) AND zone != z1, sum(usage) by region
    let criteria = logical(
        LogicalOp::And,
        logical(LogicalOp::Or, cond("region", BinaryOp::In, tag_strs(&["eu", "ap"])), cond("host", BinaryOp::Eq, tag_str("host-001"))),
        cond("zone", BinaryOp::Ne, tag_str("z1")),
    );
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        criteria: Some(criteria),
        group_by: Some(GroupBy { tag_projection: Some(projection("default", &["region"])), field_name: "usage".into(), bucket_millis: 0 }),
        agg: Some(Aggregation { function: AggregationFunction::Sum as i32, field_name: "usage".into(), field_names: vec![] }),
        ..Default::default()
    };
    let got = http.query(&q).await;
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for s in oracle.rows.values() {
        if (s.region == "eu" || s.region == "ap" || s.host == "host-001") && s.zone != "z1" {
            *want.entry(s.region.clone()).or_default() += s.usage;
        }
    }
    assert_eq!(got.data_points.len(), want.len());
    for dp in &got.data_points {
        let region = tag_of(dp, "region");
        assert_close(field_of(dp, "usage"), want[&region], &format!("sum(usage) for {region}"));
    }
}

pub async fn check_bucketed_aggregations(http: &Http, oracle: &Oracle, range: Option<TimeRange>) {
    let bucket = HOUR;
    for (func, field) in [
        (AggregationFunction::Mean, "usage"),
        (AggregationFunction::Max, "count"),
        (AggregationFunction::Min, "usage"),
        (AggregationFunction::Count, "count"),
    ] {
        let q = QueryRequest {
            groups: vec![GROUP.into()],
            name: MEASURE.into(),
            time_range: range,
            criteria: Some(cond("host", BinaryOp::Lt, tag_str("host-010"))),
            group_by: Some(GroupBy {
                tag_projection: Some(projection("default", &["host"])),
                field_name: field.into(),
                bucket_millis: bucket / 1_000_000,
            }),
            agg: Some(Aggregation { function: func as i32, field_name: field.into(), field_names: vec![] }),
            limit: 10_000,
            ..Default::default()
        };
        let got = http.query(&q).await;
        let mut want: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
        for s in oracle.rows.values().filter(|s| s.host.as_str() < "host-010") {
            let v = if field == "usage" { s.usage } else { s.count as f64 };
            want.entry((s.host.clone(), s.ts.div_euclid(bucket) * bucket)).or_default().push(v);
        }
        assert_eq!(got.data_points.len(), want.len(), "{func:?} groups");
        for dp in &got.data_points {
            let vals = &want[&(tag_of(dp, "host"), nanos_of(dp))];
            let expect = match func {
                AggregationFunction::Mean => vals.iter().sum::<f64>() / vals.len() as f64,
                AggregationFunction::Max => vals.iter().cloned().fold(f64::MIN, f64::max),
                AggregationFunction::Min => vals.iter().cloned().fold(f64::MAX, f64::min),
                _ => vals.len() as f64,
            };
            assert_close(field_of(dp, field), expect, &format!("{func:?}({field})"));
        }
        // Buckets come back in time order.
        let times: Vec<i64> = got.data_points.iter().map(nanos_of).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}

pub async fn check_raw_ordering(http: &Http, oracle: &Oracle, range: Option<TimeRange>) {
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        criteria: Some(cond("host", BinaryOp::Eq, tag_str("host-005"))),
        tag_projection: Some(TagProjection {
            tag_families: vec![
                tag_projection::TagFamily { name: "default".into(), tags: vec!["host".into()] },
                tag_projection::TagFamily { name: "extra".into(), tags: vec!["zone".into()] },
            ],
        }),
        field_projection: Some(FieldProjection { names: vec!["usage".into(), "count".into()] }),
        order_by: Some(OrderBy { sort: Sort::Desc as i32 }),
        offset: 10,
        limit: 50,
        ..Default::default()
    };
    let got = http.query(&q).await;
    let mut want: Vec<&Sample> = oracle.rows.values().filter(|s| s.host == "host-005").collect();
    want.sort_by_key(|s| std::cmp::Reverse(s.ts));
    let want = &want[10..60];
    assert_eq!(got.data_points.len(), 50);
    for (dp, s) in got.data_points.iter().zip(want) {
        assert_eq!(nanos_of(dp), s.ts);
        assert_eq!(tag_of(dp, "zone"), s.zone);
        assert_eq!(field_of(dp, "usage"), s.usage);
        assert_eq!(field_of(dp, "count"), s.count as f64);
        assert_eq!(dp.version, s.version);
    }
}

pub async fn check_top_n(http: &Http, oracle: &Oracle, range: Option<TimeRange>) {
    // Top 3 hosts by max(usage), and the 5 lowest raw usages.
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        group_by: Some(GroupBy { tag_projection: Some(projection("default", &["host"])), field_name: "usage".into(), bucket_millis: 0 }),
        agg: Some(Aggregation { function: AggregationFunction::Max as i32, field_name: "usage".into(), field_names: vec![] }),
        top: Some(Top { number: 3, field_name: "usage".into(), field_value_sort: Sort::Desc as i32 }),
        ..Default::default()
    };
    let got = http.query(&q).await;
    let mut max_by_host: BTreeMap<String, f64> = BTreeMap::new();
    for s in oracle.rows.values() {
        let m = max_by_host.entry(s.host.clone()).or_insert(f64::MIN);
        *m = m.max(s.usage);
    }
    let mut ranked: Vec<(String, f64)> = max_by_host.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let got: Vec<(String, f64)> = got.data_points.iter().map(|d| (tag_of(d, "host"), field_of(d, "usage"))).collect();
    assert_eq!(got, ranked[..3].to_vec());

    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        field_projection: Some(FieldProjection { names: vec!["usage".into()] }),
        top: Some(Top { number: 5, field_name: "usage".into(), field_value_sort: Sort::Asc as i32 }),
        ..Default::default()
    };
    let got: Vec<f64> = http.query(&q).await.data_points.iter().map(|d| field_of(d, "usage")).collect();
    let mut all: Vec<f64> = oracle.rows.values().map(|s| s.usage).collect();
    all.sort_by(f64::total_cmp);
    assert_eq!(got, all[..5].to_vec());
}

pub async fn check_field_conditions_and_multi_field_aggregations(http: &Http, oracle: &Oracle, range: Option<TimeRange>) {
    // usage > 90 AND region == "eu": raw rows, then last/first/max of two fields per host.
    let field_gt = Criteria {
        exp: Some(criteria::Exp::Condition(Condition {
            name: "usage".into(),
            op: BinaryOp::Gt as i32,
            value: None,
            field_value: Some(FieldValue { value: Some(field_value::Value::Float(Float { value: 90.0 })) }),
        })),
    };
    let criteria = logical(LogicalOp::And, field_gt, cond("region", BinaryOp::Eq, tag_str("eu")));
    let want: Vec<&Sample> = oracle.rows.values().filter(|s| s.usage > 90.0 && s.region == "eu").collect();
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        criteria: Some(criteria.clone()),
        field_projection: Some(FieldProjection { names: vec!["usage".into()] }),
        limit: 10_000,
        ..Default::default()
    };
    let got = http.query(&q).await;
    assert_eq!(got.data_points.len(), want.len(), "rows with usage > 90 in eu");
    assert!(got.data_points.iter().all(|d| field_of(d, "usage") > 90.0));
    for (func, pick) in [(AggregationFunction::Last, true), (AggregationFunction::First, false)] {
        let q = QueryRequest {
            groups: vec![GROUP.into()],
            name: MEASURE.into(),
            time_range: range,
            criteria: Some(criteria.clone()),
            group_by: Some(GroupBy {
                tag_projection: Some(projection("default", &["host"])),
                field_name: "usage".into(),
                bucket_millis: 0,
            }),
            agg: Some(Aggregation { function: func as i32, field_name: "usage".into(), field_names: vec!["count".into()] }),
            limit: 1000,
            ..Default::default()
        };
        let got = http.query(&q).await;
        let mut expect: BTreeMap<String, &Sample> = BTreeMap::new();
        for s in &want {
            let e = expect.entry(s.host.clone()).or_insert(s);
            if (pick && s.ts > e.ts) || (!pick && s.ts < e.ts) {
                *e = s;
            }
        }
        assert_eq!(got.data_points.len(), expect.len(), "{func:?} groups");
        for d in &got.data_points {
            let s = expect[&tag_of(d, "host")];
            assert_eq!(field_of(d, "usage"), s.usage, "{func:?} usage of {}", s.host);
            assert_eq!(field_of(d, "count"), s.count as f64, "{func:?} count of {}", s.host);
        }
    }
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: range,
        agg: Some(Aggregation {
            function: AggregationFunction::Max as i32,
            field_name: String::new(),
            field_names: vec!["usage".into(), "count".into()],
        }),
        ..Default::default()
    };
    let got = http.query(&q).await;
    assert_eq!(field_of(&got.data_points[0], "usage"), oracle.rows.values().map(|s| s.usage).fold(f64::MIN, f64::max));
    assert_eq!(field_of(&got.data_points[0], "count"), oracle.rows.values().map(|s| s.count).max().unwrap() as f64);
}
