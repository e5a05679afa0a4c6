//! Done-means 2 (OTLP): the OpenTelemetry Python SDK exports a counter, an
//! up-down counter, a gauge, a histogram and an exponential histogram over
//! OTLP gRPC and OTLP HTTP; what Canopy's native query API returns is what
//! the SDK sent. Plus OTLP/JSON by hand and malformed payloads.

mod common;

use std::process::Command;

use canopy_api::v1::*;
use common::*;
use serde_json::{Value, json};

fn python() -> String {
    std::env::var("CANOPY_PYTHON").unwrap_or_else(|_| format!("{}/.cache/canopy-venv/bin/python", std::env::var("HOME").unwrap()))
}

fn export(mode: &str, endpoint: &str) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otel/export_metrics.py");
    let out = Command::new(python())
        .args([script, mode, endpoint])
        .output()
        .expect("python with the OpenTelemetry SDK (the test command installs it)");
    assert!(out.status.success(), "exporter failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Raw points of `measure` in group `otlp` whose labels equal `labels`.
async fn points(http: &Http, measure: &str, labels: &[(&str, String)], fields: &[&str]) -> Vec<DataPoint> {
    let mut criteria: Option<Criteria> = None;
    for (k, v) in labels {
        let c = cond(k, BinaryOp::Eq, tag_str(v));
        criteria = Some(match criteria {
            None => c,
            Some(p) => logical(logical_expression::LogicalOp::And, p, c),
        });
    }
    let q = QueryRequest {
        groups: vec!["otlp".into()],
        name: measure.into(),
        time_range: time_range(now_nanos() - HOUR, now_nanos() + HOUR),
        criteria,
        field_projection: Some(FieldProjection { names: fields.iter().map(|f| f.to_string()).collect() }),
        limit: 100,
        ..Default::default()
    };
    http.query(&q).await.data_points
}

/// The only point of a query's answer.
fn single(mut pts: Vec<DataPoint>, what: &str) -> DataPoint {
    assert_eq!(pts.len(), 1, "{what}: {pts:?}");
    pts.remove(0)
}

async fn check(http: &Http, mode: &str, sent: &[Value]) {
    let job = format!("canopy-test-{mode}");
    let mut checked = 0;
    for e in sent {
        let mut labels: Vec<(&str, String)> =
            vec![("job", job.clone()), ("otel_scope_name", "canopy.test".into()), ("otel_scope_version", "1.2.3".into())];
        for (k, v) in e["attributes"].as_object().unwrap() {
            labels.push((k.as_str(), v.as_str().unwrap().to_string()));
        }
        let time = e["time"].as_i64().unwrap();
        // The SDK may export a stream more than once (flush, then shutdown):
        // each export is one point at its own timestamp, stored exactly once.
        let one = |pts: Vec<DataPoint>, what: &str| -> DataPoint {
            let at: Vec<DataPoint> = pts.into_iter().filter(|p| nanos_of(p) == time).collect();
            assert_eq!(at.len(), 1, "{mode} {what} at {time}: {at:?}");
            at.into_iter().next().unwrap()
        };
        match (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()) {
            ("test.requests", "Sum") => {
                labels.push(("otel_temporality", "cumulative".into()));
                labels.push(("otel_monotonic", "true".into()));
                let p = one(points(http, "test_requests_total", &labels, &["value"]).await, "counter");
                assert_eq!(field_of(&p, "value"), e["value"].as_f64().unwrap());
            }
            ("test.queue.depth", "Sum") => {
                labels.push(("otel_monotonic", "false".into()));
                let p = one(points(http, "test_queue_depth", &labels, &["value"]).await, "up-down counter");
                assert_eq!(field_of(&p, "value"), 7.0);
                assert_eq!(field_of(&p, "value"), e["value"].as_f64().unwrap());
            }
            ("test.temperature", "Gauge") => {
                let p = one(points(http, "test_temperature_celsius", &labels, &["value"]).await, "gauge");
                assert_eq!(field_of(&p, "value"), e["value"].as_f64().unwrap());
            }
            ("test.latency", "Histogram") => {
                let base = "test_latency_milliseconds";
                for (suffix, key) in [("count", "count"), ("sum", "sum"), ("min", "min"), ("max", "max")] {
                    let p = one(points(http, &format!("{base}_{suffix}"), &labels, &["value"]).await, suffix);
                    assert_eq!(field_of(&p, "value"), e[key].as_f64().unwrap(), "histogram {suffix}");
                }
                let bounds = e["bounds"].as_array().unwrap();
                let counts = e["counts"].as_array().unwrap();
                let mut cumulative = 0.0;
                for (i, b) in bounds.iter().enumerate() {
                    cumulative += counts[i].as_f64().unwrap();
                    let mut l = labels.clone();
                    l.push(("le", b.as_f64().unwrap().to_string()));
                    let p = one(points(http, &format!("{base}_bucket"), &l, &["value"]).await, "bucket");
                    assert_eq!(field_of(&p, "value"), cumulative, "bucket le={b}");
                }
                let mut l = labels.clone();
                l.push(("le", "+Inf".into()));
                let p = one(points(http, &format!("{base}_bucket"), &l, &["value"]).await, "+Inf bucket");
                assert_eq!(field_of(&p, "value"), e["count"].as_f64().unwrap());
            }
            ("test.size", "ExponentialHistogram") => {
                let names = [
                    "count",
                    "sum",
                    "min",
                    "max",
                    "zero_count",
                    "scale",
                    "positive_offset",
                    "positive_counts",
                    "negative_offset",
                    "negative_counts",
                ];
                let p = one(points(http, "test_size_bytes", &labels, &names).await, "exponential histogram");
                let csv = |v: &Value| v.as_array().unwrap().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
                assert_eq!(field_value_of(&p, "count"), field_value::Value::Int(Int { value: e["count"].as_i64().unwrap() }));
                assert_eq!(field_value_of(&p, "zero_count"), field_value::Value::Int(Int { value: e["zero_count"].as_i64().unwrap() }));
                assert_eq!(field_value_of(&p, "scale"), field_value::Value::Int(Int { value: e["scale"].as_i64().unwrap() }));
                assert_eq!(
                    field_value_of(&p, "positive_offset"),
                    field_value::Value::Int(Int { value: e["positive_offset"].as_i64().unwrap() })
                );
                assert_eq!(
                    field_value_of(&p, "negative_offset"),
                    field_value::Value::Int(Int { value: e["negative_offset"].as_i64().unwrap() })
                );
                assert_eq!(field_value_of(&p, "positive_counts"), field_value::Value::Str(Str { value: csv(&e["positive_counts"]) }));
                assert_eq!(field_value_of(&p, "negative_counts"), field_value::Value::Str(Str { value: csv(&e["negative_counts"]) }));
                for k in ["sum", "min", "max"] {
                    assert_eq!(field_of(&p, k), e[k].as_f64().unwrap(), "exponential histogram {k}");
                }
            }
            other => panic!("unexpected metric {other:?}"),
        }
        checked += 1;
    }
    let names: std::collections::BTreeSet<&str> = sent.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 5, "{mode}: counter, up-down counter, gauge, histogram, exponential histogram: {names:?}");
    assert!(checked >= 7, "{mode}: only {checked} data points checked");
}

#[tokio::test]
async fn the_python_sdk_over_grpc_and_http_reads_back_exactly() {
    let c = Canopy::start(Backend::Local, &[]);
    let http = Http::new(c.http);
    let grpc_sent = export("grpc", &format!("http://{}", c.otlp_grpc));
    let http_sent = export("http", &format!("http://{}/v1/metrics", c.otlp_http));
    check(&http, "grpc", &grpc_sent).await;
    check(&http, "http", &http_sent).await;
}

#[tokio::test]
async fn otlp_json_and_malformed_payloads() {
    let c = Canopy::start(Backend::Local, &[]);
    let http = Http::new(c.http);
    let t = now_nanos();
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeMetrics": [{"scope": {"name": "s"}, "metrics": [
            {"name": "json.gauge", "unit": "1", "gauge": {"dataPoints": [
                {"attributes": [{"key": "k", "value": {"intValue": "3"}}], "timeUnixNano": t.to_string(), "asDouble": 0.25}]}},
            {"name": "json.count", "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [
                {"timeUnixNano": t.to_string(), "asInt": "42"}]}},
            {"name": "json.delta", "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [
                {"timeUnixNano": t.to_string(), "asDouble": 1.5}]}},
            {"name": "json.rpc", "unit": "s", "summary": {"dataPoints": [
                {"timeUnixNano": t.to_string(), "count": "10", "sum": 2.5,
                 "quantileValues": [{"quantile": 0.5, "value": 0.2}, {"quantile": 0.99, "value": 0.9}]}]}}
        ]}]
    }]});
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/metrics", c.otlp_http))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let p = single(points(&http, "json_gauge_ratio", &[("job", "json-svc".into()), ("k", "3".into())], &["value"]).await, "json gauge");
    assert_eq!((field_of(&p, "value"), nanos_of(&p)), (0.25, t));
    let p = single(points(&http, "json_count_total", &[("job", "json-svc".into())], &["value"]).await, "json counter");
    assert_eq!(field_of(&p, "value"), 42.0);
    let delta = [("otel_temporality", "delta".into()), ("otel_monotonic", "true".into())];
    let p = single(points(&http, "json_delta_total", &delta, &["value"]).await, "json delta sum");
    assert_eq!(field_of(&p, "value"), 1.5, "delta sums keep their temporality");
    for (q, v) in [("0.5", 0.2), ("0.99", 0.9)] {
        let p = single(points(&http, "json_rpc_seconds", &[("quantile", q.into())], &["value"]).await, "json summary quantile");
        assert_eq!(field_of(&p, "value"), v, "summary quantile {q}");
    }
    assert_eq!(field_of(&single(points(&http, "json_rpc_seconds_count", &[], &["value"]).await, "json summary count"), "value"), 10.0);
    assert_eq!(field_of(&single(points(&http, "json_rpc_seconds_sum", &[], &["value"]).await, "json summary sum"), "value"), 2.5);

    // Malformed: truncated protobuf, bad JSON, bad gzip — 400 with a message, no panic.
    for (ct, enc, body, want) in [
        ("application/x-protobuf", None, vec![0x0a, 0xff, 0xff, 0x01], "invalid OTLP protobuf"),
        ("application/json", None, b"{\"resourceMetrics\": [".to_vec(), "invalid OTLP JSON"),
        ("application/x-protobuf", Some("gzip"), b"not gzip".to_vec(), "gzip"),
    ] {
        let mut req = reqwest::Client::new().post(format!("http://{}/v1/metrics", c.otlp_http)).header("Content-Type", ct).body(body);
        if let Some(e) = enc {
            req = req.header("Content-Encoding", e);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains(want), "{text}");
    }
    // The service is still up.
    assert_eq!(http.get("/api/healthz").await.0, 200);
}
