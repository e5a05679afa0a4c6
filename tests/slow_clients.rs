//! Clients that trickle their requests hold nothing for long: a body not
//! received within `--http-read-timeout-secs` is answered 408 and frees its
//! request slot, a connection that never finishes its headers is closed —
//! so more slow clients than there are request slots do not shut others out.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trickle_requests_are_cut_off_and_others_are_served() {
    let c = Canopy::start(Backend::Local, &["--http-read-timeout-secs", "2"]);
    // More than the 64 request slots of a port: each sends its headers,
    // promises a body and sends ten bytes of it.
    let mut slow = Vec::new();
    for _ in 0..70 {
        let mut s = TcpStream::connect(c.http).await.unwrap();
        let head = "POST /api/v1/measure/write HTTP/1.1\r\nHost: canopy\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        s.write_all(format!("{head}{{\"metadata").as_bytes()).await.unwrap();
        slow.push(s);
    }
    // And one that never finishes its headers.
    let mut half = TcpStream::connect(c.http).await.unwrap();
    half.write_all(b"GET /api/healthz HTTP/1.1\r\nHo").await.unwrap();

    // Someone else is still served (without the deadlines the slots stay
    // taken for as long as the slow clients like: for ever).
    let http = Http::new(c.http);
    tokio::time::timeout(Duration::from_secs(60), create_schema(&http))
        .await
        .expect("a normal request was not served while slow clients held the request slots");

    // The slow ones were answered 408, naming what was late.
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), slow[0].read(&mut answer)).await.expect("no answer").unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body: not received within"), "{text}");
    // The half-sent headers: the connection is closed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), half.read_to_end(&mut rest)).await.expect("the connection stayed open");
    assert!(closed.is_err() || !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"), "{closed:?} {rest:?}");
    assert_eq!(http.get("/api/healthz").await.0, 200);
}
