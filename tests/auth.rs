//! With `--auth-tokens-file`, every endpoint but health checks wants a token
//! of a role that allows it: none → 401 / UNAUTHENTICATED, the wrong role →
//! 403 / PERMISSION_DENIED, the right one (or admin) → served. Over HTTP
//! (native API, remote write and read, line protocol, OTLP/HTTP, admin,
//! `/metrics`) and gRPC (native, OTLP), with the headers agents send.

mod common;

use base64::Engine;
use canopy_api::prometheus as pb;
use canopy_api::v1::measure_service_client::MeasureServiceClient;
use canopy_api::v1::*;
use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;

const READ: &str = "r-7f3a9c";
const WRITE: &str = "w-51be02";
const ADMIN: &str = "a-c0ffee";

/// One HTTP request as an agent or client sends it.
struct Call {
    what: &'static str,
    path: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    /// The role that may make it (admin may make all).
    role: &'static str,
}

async fn send(base: std::net::SocketAddr, call: &Call, auth: Option<String>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(format!("http://{base}{}", call.path)).body(call.body.clone());
    for (k, v) in &call.headers {
        req = req.header(*k, v);
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn every_endpoint_wants_a_token_of_a_role_that_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let text = format!(
        "# role  sha256(token)\nread {}\nwrite {}\nadmin {}  # operators\n",
        sha256_hex(READ),
        sha256_hex(WRITE),
        sha256_hex(ADMIN)
    );
    std::fs::write(&file, text).unwrap();
    let c = Canopy::start(Backend::Local, &["--auth-tokens-file", file.to_str().unwrap()]);
    let open = Http::new(c.http);
    let admin = Http::with_token(c.http, ADMIN);

    // Health checks stay open; everything else is refused without a token.
    assert_eq!(open.get("/api/healthz").await.0, 200);
    let (s, b) = open.post_raw("/api/v1/group/schema/lists", String::new()).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["code"], "UNAUTHENTICATED", "{b}");
    create_schema(&admin).await;

    let now = now_nanos();
    let batch = samples(2, 3, now - HOUR / 2, 1_000_000_000, 3);
    let query = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: time_range(now - HOUR, now + HOUR),
        limit: 100,
        ..Default::default()
    };
    let remote_write = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: vec![pb::Label { name: "__name__".into(), value: "up".into() }, pb::Label { name: "job".into(), value: "a".into() }],
            samples: vec![pb::Sample { value: 1.0, timestamp: now / 1_000_000 }],
        }],
        metadata: vec![],
    };
    let remote_read = pb::ReadRequest {
        queries: vec![pb::Query {
            start_timestamp_ms: now / 1_000_000 - 60_000,
            end_timestamp_ms: now / 1_000_000 + 60_000,
            matchers: vec![pb::LabelMatcher { r#type: 0, name: "__name__".into(), value: "up".into() }],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let snappy = |m: Vec<u8>| snap::raw::Encoder::new().compress_vec(&m).unwrap();
    let prom = || vec![("Content-Encoding", "snappy".to_string()), ("Content-Type", "application/x-protobuf".to_string())];
    let otlp = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "auth.gauge", "gauge": {"dataPoints": [{"timeUnixNano": now.to_string(), "asDouble": 1.0}]}}]}]}]});
    let calls = [
        Call {
            what: "native write",
            path: "/api/v1/measure/write".into(),
            body: serde_json::to_vec(&write_request(&batch, 1)).unwrap(),
            headers: vec![],
            role: "write",
        },
        Call { what: "native query", path: "/api/v1/measure/data".into(), body: serde_json::to_vec(&query).unwrap(), headers: vec![], role: "read" },
        Call { what: "remote write", path: "/api/v1/write".into(), body: snappy(remote_write.encode_to_vec()), headers: prom(), role: "write" },
        Call { what: "remote read", path: "/api/v1/read".into(), body: snappy(remote_read.encode_to_vec()), headers: prom(), role: "read" },
        Call { what: "line protocol", path: "/api/v2/write?bucket=lp".into(), body: format!("m,h=a v=1 {now}").into_bytes(), headers: vec![], role: "write" },
        Call {
            what: "OTLP/HTTP",
            path: "/v1/metrics".into(),
            body: otlp.to_string().into_bytes(),
            headers: vec![("Content-Type", "application/json".into())],
            role: "write",
        },
        Call { what: "admin flush", path: "/api/v1/admin/flush".into(), body: vec![], headers: vec![], role: "admin" },
        Call {
            what: "schema change",
            path: "/api/v1/group/schema".into(),
            body: br#"{"group": {"metadata": {"name": "other"}, "catalog": "CATALOG_MEASURE", "resourceOpts": {"shardNum": 1, "segmentInterval": {"unit": "UNIT_DAY", "num": 1}, "ttl": {"unit": "UNIT_DAY", "num": 7}}}}"#.to_vec(),
            headers: vec![],
            role: "admin",
        },
    ];
    let token_of = |role: &str| match role {
        "read" => READ,
        "write" => WRITE,
        _ => ADMIN,
    };
    for call in &calls {
        let (s, b) = send(c.http, call, None).await;
        assert_eq!(s, 401, "{} without a token: {b}", call.what);
        let (s, b) = send(c.http, call, Some("Bearer not-a-token".into())).await;
        assert_eq!(s, 401, "{} with an unknown token: {b}", call.what);
        for other in ["read", "write"].into_iter().filter(|r| *r != call.role) {
            let (s, b) = send(c.http, call, Some(format!("Bearer {}", token_of(other)))).await;
            assert_eq!(s, 403, "{} with a {other} token: {b}", call.what);
            assert!(b.contains("PERMISSION_DENIED"), "{} with a {other} token: {b}", call.what);
        }
        let (s, b) = send(c.http, call, Some(format!("Bearer {}", token_of(call.role)))).await;
        assert!((200..300).contains(&s), "{} with a {} token: {s} {b}", call.what, call.role);
    }
    // The headers other agents send: Telegraf's `Token`, Prometheus'
    // basic_auth (the password is the token), InfluxDB 1's `p` parameter.
    let lp = &calls[4];
    assert_eq!(send(c.http, lp, Some(format!("Token {WRITE}"))).await.0, 204);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{WRITE}")));
    assert_eq!(send(c.http, &calls[2], Some(basic)).await.0, 204);
    let v1 = Call { what: "v1", path: format!("/write?db=lp&u=telegraf&p={WRITE}"), body: lp.body.clone(), headers: vec![], role: "write" };
    assert_eq!(send(c.http, &v1, None).await.0, 204);
    // The dedicated agent ports check tokens too.
    assert_eq!(send(c.influx, lp, None).await.0, 401);
    assert_eq!(send(c.otlp_http, &calls[5], None).await.0, 401);
    assert_eq!(send(c.otlp_http, &calls[5], Some(format!("Bearer {WRITE}"))).await.0, 200);
    // `/metrics` is for readers.
    assert_eq!(open.get_text("/metrics").await.0, 401);
    assert_eq!(Http::with_token(c.http, READ).get_text("/metrics").await.0, 200);

    // gRPC: the `authorization` metadata.
    let mut native = MeasureServiceClient::connect(format!("http://{}", c.grpc)).await.unwrap();
    assert_eq!(native.query(with(None, query.clone())).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(native.query(with(Some(WRITE), query.clone())).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let got = native.query(with(Some(READ), query.clone())).await.unwrap().into_inner();
    assert_eq!(got.data_points.len(), batch.len(), "the native write above landed");
    let stream = |token| with(token, tokio_stream::iter(vec![write_request(&batch, 2)]));
    assert_eq!(native.write(stream(Some(READ))).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert!(native.write(stream(Some(WRITE))).await.is_ok());
    let mut otlp_grpc = MetricsServiceClient::connect(format!("http://{}", c.otlp_grpc)).await.unwrap();
    let export = ExportMetricsServiceRequest::default();
    assert_eq!(otlp_grpc.export(with(None, export.clone())).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(otlp_grpc.export(with(Some(WRITE), export)).await.is_ok());
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", c.grpc)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok(), "health stays open");
}

/// A gRPC request carrying `authorization: Bearer {token}` when given.
fn with<T>(token: Option<&str>, msg: T) -> tonic::Request<T> {
    grpc_request(msg, "authorization", token.map(|t| format!("Bearer {t}")))
}

#[tokio::test]
async fn a_bad_tokens_file_stops_start_up_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "read 1234\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["standalone", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--otlp-grpc-addr", "off", "--otlp-http-addr", "off"])
        .args(["--influx-addr", "off", "--auth-tokens-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("64 hex digits"), "{err}");
}
