//! Done-means 3 and 4 (line protocol): several measurements with tags and
//! int / float / string / bool fields, in every precision, plain and gzip,
//! v1 and v2 endpoints, read back through the native query API; malformed
//! bodies get a 400 that says what is wrong.

mod common;

use canopy_api::v1::*;
use common::*;

struct Line {
    ts_nanos: i64,
    host: &'static str,
    usage: f64,
    count: i64,
    state: &'static str,
    up: bool,
}

async fn raw(http: &Http, group: &str, measure: &str, tags: &[&str], fields: &[&str], begin: i64) -> Vec<DataPoint> {
    let q = QueryRequest {
        groups: vec![group.into()],
        name: measure.into(),
        time_range: time_range(begin, now_nanos() + HOUR),
        tag_projection: Some(projection("labels", tags)),
        field_projection: Some(FieldProjection { names: fields.iter().map(|f| f.to_string()).collect() }),
        limit: 1000,
        ..Default::default()
    };
    http.query(&q).await.data_points
}

async fn post(c: &Canopy, path: &str, body: Vec<u8>, gzip: bool) -> (u16, String) {
    post_bytes_text(&format!("http://{}{path}", c.http), &body, if gzip { Encoding::Gzip } else { Encoding::Identity }).await
}

#[tokio::test]
async fn line_protocol_round_trips_in_every_precision() {
    let c = Canopy::start(Backend::Local, &[]);
    let http = Http::new(c.http);
    let base = (now_nanos() / 1_000_000_000 - 600) * 1_000_000_000;
    let lines = [
        Line { ts_nanos: base + 1, host: "a", usage: 12.5, count: 3, state: "ok", up: true },
        Line { ts_nanos: base + 2_000, host: "b", usage: -0.25, count: -7, state: "degraded, \"slow\"", up: false },
        Line { ts_nanos: base + 3_000_000, host: "a", usage: 99.0, count: 0, state: "", up: true },
        Line { ts_nanos: base + 4_000_000_000, host: "c d", usage: 1e-3, count: i64::MAX, state: "x=y", up: false },
    ];
    // Each precision on its own line, across v1 and v2, plain and gzip.
    let cases = [
        ("ns", 1i64, "/write?db=telegraf&precision=ns", false),
        ("us", 1_000, "/api/v2/write?bucket=telegraf&org=o&precision=us", true),
        ("ms", 1_000_000, "/write?db=telegraf&precision=ms", true),
        ("s", 1_000_000_000, "/api/v2/write?bucket=telegraf&precision=s", false),
    ];
    let mut expected = Vec::new();
    for (i, (_, unit, path, gzip)) in cases.iter().enumerate() {
        let l = &lines[i];
        let ts = l.ts_nanos / unit;
        let host = l.host.replace(' ', "\\ ");
        let state = l.state.replace('\\', "\\\\").replace('"', "\\\"");
        let body = format!(
            "cpu,host={host},region=eu usage={:?},count={}i,state=\"{state}\",up={} {ts}\nmem,host={host} free={}i {ts}\n",
            l.usage,
            l.count,
            l.up,
            i * 100
        );
        let (s, b) = post(&c, path, body.into_bytes(), *gzip).await;
        assert_eq!(s, 204, "{path}: {b}");
        expected.push((ts * unit, l));
    }
    let got = raw(&http, "telegraf", "cpu", &["host", "region"], &["usage", "count", "state", "up"], base - 1).await;
    assert_eq!(got.len(), 4);
    for (dp, (ts, l)) in got.iter().zip(&expected) {
        assert_eq!(nanos_of(dp), *ts);
        assert_eq!(tag_of(dp, "host"), l.host);
        assert_eq!(tag_of(dp, "region"), "eu");
        assert_eq!(field_value_of(dp, "usage"), field_value::Value::Float(Float { value: l.usage }));
        assert_eq!(field_value_of(dp, "count"), field_value::Value::Int(Int { value: l.count }));
        assert_eq!(field_value_of(dp, "state"), field_value::Value::Str(Str { value: l.state.into() }));
        assert_eq!(field_value_of(dp, "up"), field_value::Value::Bool(Bool { value: l.up }));
    }
    let mem = raw(&http, "telegraf", "mem", &["host"], &["free"], base - 1).await;
    assert_eq!(mem.iter().map(|d| field_of(d, "free") as i64).collect::<Vec<_>>(), vec![0, 100, 200, 300]);

    // Without db/bucket the default group is used; a missing timestamp means now.
    let (s, b) = post(&c, "/write", b"disk,dev=sda used=1.5".to_vec(), false).await;
    assert_eq!(s, 204, "{b}");
    let disk = raw(&http, "influx", "disk", &["dev"], &["used"], now_nanos() - HOUR).await;
    assert_eq!(disk.len(), 1);
    assert!((nanos_of(&disk[0]) - now_nanos()).abs() < 60_000_000_000);

    // A new tag and a new field extend the measure; old points read them as null.
    let (s, b) = post(
        &c,
        "/write?db=telegraf&precision=s",
        format!("cpu,host=a,region=eu,zone=z1 usage=1,temp=36.6 {}", base / 1_000_000_000 + 5).into_bytes(),
        false,
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let all = raw(&http, "telegraf", "cpu", &["host", "zone"], &["temp"], base - 1).await;
    assert_eq!(all.len(), 5);
    assert_eq!(all.iter().filter(|d| matches!(field_value_of(d, "temp"), field_value::Value::Null(_))).count(), 4);
}

#[tokio::test]
async fn malformed_line_protocol_is_a_400_that_says_why() {
    let c = Canopy::start(Backend::Local, &[]);
    for (path, body, want) in [
        ("/write", "cpu", "missing fields"),
        ("/write", "cpu,host=a usage=1\ncpu usage=oops", "line 2"),
        ("/api/v2/write", "cpu usage=1 notatime", "bad timestamp"),
        ("/write?precision=fortnight", "cpu usage=1", "precision"),
        ("/write", "cpu msg=\"unterminated", "unterminated string"),
        // Twice: a series that failed to parse is not remembered as parsed.
        ("/write", "cpu usage=1\ncpu,host usage=2", "line 2: tag"),
        ("/write", "cpu,host usage=2", "line 1: tag"),
    ] {
        let (s, b) = post(&c, path, body.as_bytes().to_vec(), false).await;
        assert_eq!(s, 400, "{path} {body:?}: {b}");
        assert!(b.contains(want), "{path} {body:?}: {b}");
    }
    // Not gzip although it says so.
    let r = reqwest::Client::new()
        .post(format!("http://{}/write", c.http))
        .header("Content-Encoding", "gzip")
        .body("cpu usage=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("gzip"));
    // A field that changes type is rejected, the others in the batch are kept.
    let (s, _) = post(&c, "/write", b"t v=1i".to_vec(), false).await;
    assert_eq!(s, 204);
    let (s, b) = post(&c, "/write", b"t v=1.5\nt,k=x v=2i".to_vec(), false).await;
    assert_eq!(s, 400);
    assert!(b.contains("FIELD_TYPE_INT") && b.contains("1 accepted"), "{b}");
}
