//! Prometheus remote write and remote read, hand-built on the wire: samples
//! (with a stale marker) go in, matchers of every kind select them back
//! exactly; malformed payloads get a 400 with a message.

mod common;

use canopy_api::prometheus as pb;
use common::*;
use prost::Message;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A series as (labels, (timestamp, value bits)) for exact comparison.
type Comparable = (Vec<(String, String)>, Vec<(i64, u64)>);

fn series(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TimeSeries {
    let mut l = vec![pb::Label { name: "__name__".into(), value: name.into() }];
    l.extend(labels.iter().map(|(k, v)| pb::Label { name: k.to_string(), value: v.to_string() }));
    pb::TimeSeries { labels: l, samples: samples.iter().map(|&(t, v)| pb::Sample { value: v, timestamp: t }).collect() }
}

async fn post_snappy(c: &Canopy, path: &str, msg: Vec<u8>) -> reqwest::Response {
    post_bytes(&format!("http://{}{path}", c.http), &msg, Encoding::Snappy, Some("application/x-protobuf")).await
}

async fn read(c: &Canopy, start: i64, end: i64, matchers: Vec<pb::LabelMatcher>) -> Vec<pb::TimeSeries> {
    let req = pb::ReadRequest {
        queries: vec![pb::Query { start_timestamp_ms: start, end_timestamp_ms: end, matchers, hints: None }],
        accepted_response_types: vec![],
    };
    let r = post_snappy(c, "/api/v1/read", req.encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "snappy");
    let body = snap::raw::Decoder::new().decompress_vec(&r.bytes().await.unwrap()).unwrap();
    let mut resp = pb::ReadResponse::decode(body.as_slice()).unwrap();
    assert_eq!(resp.results.len(), 1);
    resp.results.remove(0).timeseries
}

fn m(kind: pb::label_matcher::Type, name: &str, value: &str) -> pb::LabelMatcher {
    pb::LabelMatcher { r#type: kind as i32, name: name.into(), value: value.into() }
}

#[tokio::test]
async fn remote_write_then_remote_read_is_exact() {
    use pb::label_matcher::Type::*;
    let c = Canopy::start(Backend::Local, &[]);
    let t0 = now_nanos() / 1_000_000 - 60_000;
    let up_a =
        series("up", &[("instance", "a:9100"), ("job", "node")], &[(t0, 1.0), (t0 + 1000, 1.0), (t0 + 2000, f64::from_bits(STALE_NAN))]);
    let up_b = series("up", &[("instance", "b:9100"), ("job", "node")], &[(t0, 0.0), (t0 + 1000, 1.0)]);
    let cpu = series(
        "node_cpu_seconds_total",
        &[("cpu", "0"), ("instance", "a:9100"), ("mode", "idle")],
        &[(t0, 12345.67), (t0 + 1000, 12346.68)],
    );
    let extra = series("up", &[("instance", "c:9100"), ("job", "other"), ("zone", "z1")], &[(t0 + 500, 1.0)]);
    let req = pb::WriteRequest { timeseries: vec![up_a.clone(), up_b.clone(), cpu.clone(), extra.clone()], metadata: vec![] };
    let r = post_snappy(&c, "/api/v1/write", req.encode_to_vec()).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    let sorted = |mut s: pb::TimeSeries| {
        s.labels.sort_by(|a, b| a.name.cmp(&b.name));
        s
    };
    let bits = |ts: &[pb::TimeSeries]| -> Vec<Comparable> {
        ts.iter()
            .map(|s| {
                (
                    s.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                    s.samples.iter().map(|x| (x.timestamp, x.value.to_bits())).collect(),
                )
            })
            .collect()
    };
    let (start, end) = (t0 - 1, t0 + 10_000);
    let got = read(&c, start, end, vec![m(Eq, "__name__", "up"), m(Eq, "job", "node")]).await;
    assert_eq!(bits(&got), bits(&[sorted(up_a.clone()), sorted(up_b.clone())]), "stale markers keep their bits");
    // The same once the agent measures are in parts (one part holds both
    // metrics of a shard), not only in memtables.
    assert!(Http::new(c.http).flush().await > 0);
    let got = read(&c, start, end, vec![m(Eq, "__name__", "up"), m(Eq, "job", "node")]).await;
    assert_eq!(bits(&got), bits(&[sorted(up_a.clone()), sorted(up_b.clone())]), "after a flush");
    let got = read(&c, start, end, vec![m(Eq, "__name__", "up"), m(Re, "instance", "(a|c):.*")]).await;
    assert_eq!(bits(&got), bits(&[sorted(up_a.clone()), sorted(extra.clone())]));
    let got = read(&c, start, end, vec![m(Eq, "__name__", "up"), m(Neq, "job", "node")]).await;
    assert_eq!(bits(&got), bits(&[sorted(extra.clone())]));
    let got = read(&c, start, end, vec![m(Eq, "__name__", "up"), m(Eq, "zone", "")]).await;
    assert_eq!(got.len(), 2, "an empty value matches series without the label");
    let got = read(&c, start, end, vec![m(Re, "__name__", "node_.*"), m(Nre, "mode", "user|system")]).await;
    assert_eq!(bits(&got), bits(&[sorted(cpu.clone())]));
    // Inclusive bounds, as Prometheus asks them.
    let got = read(&c, t0 + 1000, t0 + 1000, vec![m(Eq, "__name__", "node_cpu_seconds_total")]).await;
    assert_eq!(got[0].samples.len(), 1);
    assert!(read(&c, start, end, vec![m(Eq, "__name__", "nope")]).await.is_empty());
}

#[tokio::test]
async fn malformed_remote_write_and_read_are_400s() {
    let c = Canopy::start(Backend::Local, &[]);
    let r = reqwest::Client::new().post(format!("http://{}/api/v1/write", c.http)).body("not snappy at all").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("snappy"));
    let mut proto = pb::WriteRequest { timeseries: vec![series("up", &[], &[(1, 1.0)])], metadata: vec![] }.encode_to_vec();
    proto.truncate(proto.len() - 3);
    let r = post_snappy(&c, "/api/v1/write", proto).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("protobuf"));
    // A timestamp whose nanoseconds overflow is refused by name, not dropped.
    let far = pb::WriteRequest { timeseries: vec![series("up", &[], &[(i64::MAX / 1000, 1.0)])], metadata: vec![] };
    let r = post_snappy(&c, "/api/v1/write", far.encode_to_vec()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("out of range"));
    let r = post_snappy(&c, "/api/v1/read", vec![0xff, 0xff, 0xff]).await;
    assert_eq!(r.status(), 400);
    let bad_re = pb::ReadRequest {
        queries: vec![pb::Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: 1,
            matchers: vec![m(pb::label_matcher::Type::Re, "job", "(")],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let r = post_snappy(&c, "/api/v1/read", bad_re.encode_to_vec()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("regex"));
}

/// One series with about 2 KB of labels and a million samples is 14 MB on
/// the wire; expanded sample by sample it would need gigabytes. It is
/// refused before expanding, naming the limit, and a request just inside the
/// limits is stored whole — all in well under 1 GiB.
#[tokio::test]
async fn a_small_body_that_would_expand_to_gigabytes_is_refused_before_expanding() {
    let c = Canopy::start(Backend::Local, &[]);
    let http = Http::new(c.http);
    let labels: Vec<(String, String)> = (0..16).map(|i| (format!("label_{i:02}"), format!("{i:02}").repeat(60))).collect();
    let label_refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let now_ms = now_nanos() / 1_000_000;
    let samples = |n: i64| (0..n).map(|i| (now_ms - 3_600_000 + i, i as f64)).collect::<Vec<_>>();

    let huge = pb::WriteRequest { timeseries: vec![series("wide", &label_refs, &samples(1_000_000))], metadata: vec![] };
    let r = post_snappy(&c, "/api/v1/write", huge.encode_to_vec()).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("agent-samples-max") || body.contains("agent-expanded-bytes-max"), "{body}");

    // Inside the limits (20,000 samples of the same series): stored whole.
    let fits = pb::WriteRequest { timeseries: vec![series("wide", &label_refs, &samples(20_000))], metadata: vec![] };
    let r = post_snappy(&c, "/api/v1/write", fits.encode_to_vec()).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(count_of(&http, "prometheus", "wide", "value", now_nanos() - 2 * HOUR).await, 20_000);
    let peak = c.peak_rss_bytes();
    assert!(peak < 1 << 30, "peak RSS {peak} bytes");
}

#[tokio::test]
async fn a_remote_read_past_its_sample_budget_is_refused_not_cut() {
    let c = Canopy::start(Backend::Local, &["--remote-read-samples-max", "5"]);
    let t0 = now_nanos() / 1_000_000 - 60_000;
    let up = series("up", &[("instance", "a:9100"), ("job", "node")], &(0..4).map(|i| (t0 + i * 1000, 1.0)).collect::<Vec<_>>());
    let mem = series("mem", &[("instance", "a:9100"), ("job", "node")], &(0..4).map(|i| (t0 + i * 1000, 2.0)).collect::<Vec<_>>());
    let req = pb::WriteRequest { timeseries: vec![up, mem], metadata: vec![] };
    assert_eq!(post_snappy(&c, "/api/v1/write", req.encode_to_vec()).await.status(), 204);
    // Four samples fit the budget of five...
    assert_eq!(read(&c, t0 - 1, t0 + 10_000, vec![m(pb::label_matcher::Type::Eq, "__name__", "up")]).await[0].samples.len(), 4);
    // ...eight do not: 429 naming the limit, not the first five.
    let all = pb::ReadRequest {
        queries: vec![pb::Query {
            start_timestamp_ms: t0 - 1,
            end_timestamp_ms: t0 + 10_000,
            matchers: vec![m(pb::label_matcher::Type::Re, "__name__", "up|mem")],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let r = post_snappy(&c, "/api/v1/read", all.encode_to_vec()).await;
    assert_eq!(r.status(), 429);
    let body = r.text().await.unwrap();
    assert!(body.contains("remote-read-samples-max"), "{body}");
}
