//! Agent limits: series per measure, labels per series, label length and
//! body size. Over a limit the request gets a 4xx that names it, and what was
//! accepted before (and in the same request) stays queryable. Also the
//! InfluxDB port's /ping and /query that clients call before writing.

mod common;

use common::*;

async fn post(c: &Canopy, body: Vec<u8>, encoding: Encoding) -> (u16, String) {
    post_bytes_text(&format!("http://{}/write?db=lim&precision=s", c.influx), &body, encoding).await
}

#[tokio::test]
async fn over_a_limit_is_a_4xx_and_nothing_accepted_is_lost() {
    let c = Canopy::start(
        Backend::Local,
        &["--agent-series-max", "3", "--agent-labels-max", "4", "--agent-label-bytes-max", "40", "--agent-body-bytes-max", "4000"],
    );
    let http = Http::new(c.http);
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("http://{}/ping", c.influx)).send().await.unwrap().status(), 204);
    assert_eq!(client.post(format!("http://{}/query?q=CREATE+DATABASE+lim", c.influx)).send().await.unwrap().status(), 200);

    let t = now_nanos() / 1_000_000_000;
    let (s, b) = post(&c, format!("m,h=a v=1 {t}\nm,h=b v=2 {t}\nm,h=c v=3 {t}").into_bytes(), Encoding::Identity).await;
    assert_eq!(s, 204, "{b}");
    // A fourth series is over the limit; the known series in the same request is kept.
    let (s, b) = post(&c, format!("m,h=d v=4 {t}\nm,h=a v=5 {}", t + 1).into_bytes(), Encoding::Identity).await;
    assert_eq!(s, 400);
    assert!(b.contains("more than 3 series") && b.contains("1 accepted"), "{b}");
    assert_eq!(count_of(&http, "lim", "m", "v", now_nanos() - HOUR).await, 4);

    let (s, b) = post(&c, format!("m,a=1,b=2,c=3,d=4,e=5 v=1 {t}").into_bytes(), Encoding::Identity).await;
    assert_eq!(s, 400);
    assert!(b.contains("5 labels, the limit is 4"), "{b}");
    let (s, b) = post(&c, format!("m,h={} v=1 {t}", "x".repeat(60)).into_bytes(), Encoding::Identity).await;
    assert_eq!(s, 400);
    assert!(b.contains("longer than 40 bytes"), "{b}");

    // A small gzip body that inflates past the limit.
    let (s, b) = post(&c, format!("m,h=a v=1 {t}\n").repeat(1000).into_bytes(), Encoding::Gzip).await;
    assert_eq!(s, 400);
    assert!(b.contains("decompressed"), "{b}");
    assert_eq!(count_of(&http, "lim", "m", "v", now_nanos() - HOUR).await, 4, "nothing accepted before was lost");
}
