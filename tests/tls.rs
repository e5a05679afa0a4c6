//! TLS on the client ports (`--tls-cert`, `--tls-key`): HTTP and gRPC answer
//! over TLS with the configured certificate (checked by curl against it as
//! the CA), plain connections get nothing, and a renewed certificate is
//! taken without a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// curl's HTTP status for `url` trusting only `ca` (0: no HTTP answer).
fn curl_status(url: &str, ca: &Path, extra: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn client_ports_speak_tls_and_take_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_key) = self_signed(dir.path(), "first");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&first, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let c = Canopy::start(Backend::Local, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);

    let https = |addr: std::net::SocketAddr, path: &str| format!("https://127.0.0.1:{}{path}", addr.port());
    assert_eq!(curl_status(&https(c.http, "/api/healthz"), &first, &[]), 200);
    // Over HTTP/2 too (ALPN), and the API itself.
    assert_eq!(curl_status(&https(c.http, "/api/healthz"), &first, &["--http2"]), 200);
    let schema = r#"{"group": {"metadata": {"name": "tls"}, "catalog": "CATALOG_MEASURE", "resourceOpts": {"shardNum": 1, "segmentInterval": {"unit": "UNIT_DAY", "num": 1}, "ttl": {"unit": "UNIT_DAY", "num": 7}}}}"#;
    assert_eq!(curl_status(&https(c.http, "/api/v1/group/schema"), &first, &["-X", "POST", "--data", schema]), 200);
    // The agent ports as well.
    assert_eq!(curl_status(&https(c.influx, "/ping"), &first, &[]), 204);
    // Plain HTTP gets no answer, and a client that does not trust the
    // certificate refuses it.
    assert_eq!(curl_status(&format!("http://127.0.0.1:{}/api/healthz", c.http.port()), &first, &[]), 0);
    let (stranger, _) = self_signed(dir.path(), "stranger");
    assert_eq!(curl_status(&https(c.http, "/api/healthz"), &stranger, &[]), 0);

    // gRPC over TLS: the health service's Check, one gRPC frame (an empty
    // request) by hand; SERVING is the frame 0x00 00000002 08 01.
    let frame = dir.path().join("check.bin");
    std::fs::write(&frame, [0u8, 0, 0, 0, 0]).unwrap();
    let out = Command::new("curl")
        .args(["-s", "--http2", "--max-time", "10", "--cacert"])
        .arg(&first)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary"])
        .arg(format!("@{}", frame.display()))
        .arg(https(c.grpc, "/grpc.health.v1.Health/Check"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, [0u8, 0, 0, 0, 2, 8, 1], "{}", String::from_utf8_lossy(&out.stderr));

    // Renewal: new files in place (as certbot swaps them); served within
    // a few checks, no restart.
    let (second, second_key) = self_signed(dir.path(), "second");
    std::fs::copy(&second_key, dir.path().join("tls.key.new")).unwrap();
    std::fs::copy(&second, dir.path().join("tls.crt.new")).unwrap();
    std::fs::rename(dir.path().join("tls.key.new"), &key).unwrap();
    std::fs::rename(dir.path().join("tls.crt.new"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_status(&https(c.http, "/api/healthz"), &second, &[]) != 200 {
        assert!(Instant::now() < deadline, "the renewed certificate was not served within 30 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(curl_status(&https(c.http, "/api/healthz"), &first, &[]), 0, "the old certificate is no longer served");
}
