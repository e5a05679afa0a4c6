//! HTTP and gRPC clients for the tests.

use std::net::SocketAddr;

use canopy_api::v1::measure_service_client::MeasureServiceClient;
use canopy_api::v1::{QueryRequest, QueryResponse, WriteRequest, WriteResponse};
use serde_json::Value;
use tokio_stream::StreamExt;

/// The `Content-Encoding` of a raw body; [`post_bytes`] compresses to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Snappy,
}

/// POSTs raw bytes to `url` (any of a server's ports), compressed as
/// `encoding` says, with a `Content-Type` when given.
pub async fn post_bytes(url: &str, body: &[u8], encoding: Encoding, content_type: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let body = match encoding {
        Encoding::Identity => body.to_vec(),
        Encoding::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(body).unwrap();
            req = req.header("Content-Encoding", "gzip");
            enc.finish().unwrap()
        }
        Encoding::Snappy => {
            req = req.header("Content-Encoding", "snappy");
            snap::raw::Encoder::new().compress_vec(body).unwrap()
        }
    };
    req.body(body).send().await.unwrap()
}

/// [`post_bytes`], answering the status and the body as text.
pub async fn post_bytes_text(url: &str, body: &[u8], encoding: Encoding) -> (u16, String) {
    let r = post_bytes(url, body, encoding, None).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A JSON-over-HTTP client for one server.
#[derive(Clone)]
pub struct Http {
    base: String,
    c: reqwest::Client,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { base: format!("http://{addr}"), c: reqwest::Client::new() }
    }

    /// A client that sends `Authorization: Bearer {token}` with every request.
    pub fn with_token(addr: SocketAddr, token: &str) -> Http {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        Http { base: format!("http://{addr}"), c: reqwest::Client::builder().default_headers(headers).build().unwrap() }
    }

    /// POSTs a raw body; returns the status and the JSON body.
    pub async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        let r = self.c.post(format!("{}{path}", self.base)).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// PUTs a JSON value; returns the status and the JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.c.put(format!("{}{path}", self.base)).body(body.to_string()).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// DELETEs; returns the status and the JSON body.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.c.delete(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// POSTs a serializable body as JSON.
    pub async fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> (u16, Value) {
        self.post_raw(path, serde_json::to_string(body).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.c.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs a text body (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.c.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// The value of one sample of `/metrics`, named with its labels exactly
    /// as exposed (`canopy_queries_total{role="querier"}`); panics if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.get_text("/metrics").await;
        let line = text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')));
        line.unwrap_or_else(|| panic!("{sample} missing from /metrics:\n{text}")).parse().unwrap()
    }

    /// Writes a batch; panics unless every point was accepted.
    pub async fn write_ok(&self, req: &WriteRequest) {
        let (status, body) = self.post("/api/v1/measure/write", req).await;
        assert_eq!(status, 200, "write failed: {body}");
    }

    /// Runs a query; panics on an error status.
    pub async fn query(&self, req: &QueryRequest) -> QueryResponse {
        self.try_query(req).await.unwrap_or_else(|e| panic!("query failed: {e}"))
    }

    /// Runs a query; an error status comes back as its body.
    pub async fn try_query(&self, req: &QueryRequest) -> Result<QueryResponse, Value> {
        let (status, body) = self.post("/api/v1/measure/data", req).await;
        if status != 200 {
            return Err(body);
        }
        Ok(serde_json::from_value(body).unwrap())
    }

    /// Forces a flush of every memtable; returns the parts written.
    pub async fn flush(&self) -> u64 {
        let (status, body) = self.post_raw("/api/v1/admin/flush", String::new()).await;
        assert_eq!(status, 200, "flush failed: {body}");
        body["parts"].as_u64().unwrap()
    }
}

/// Sends requests over one gRPC write stream; returns the responses in order.
pub async fn grpc_write(addr: SocketAddr, reqs: Vec<WriteRequest>) -> Vec<WriteResponse> {
    let mut client = MeasureServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let n = reqs.len();
    let resp = client.write(tokio_stream::iter(reqs)).await.unwrap();
    let mut stream = resp.into_inner();
    let mut out = Vec::with_capacity(n);
    while let Some(r) = stream.next().await {
        out.push(r.unwrap());
    }
    out
}

/// Runs a query over gRPC.
pub async fn grpc_query(addr: SocketAddr, req: QueryRequest) -> Result<QueryResponse, tonic::Status> {
    let mut client = MeasureServiceClient::connect(format!("http://{addr}")).await.unwrap();
    client.query(req).await.map(|r| r.into_inner())
}

/// The hex SHA-256 of a token, as an operator writes it into a tokens file
/// (`printf %s TOKEN | sha256sum`).
pub fn sha256_hex(token: &str) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A gRPC request for `msg` carrying metadata `key: value` when given.
pub fn grpc_request<T>(msg: T, key: &'static str, value: Option<String>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(v) = value {
        r.metadata_mut().insert(key, v.parse().unwrap());
    }
    r
}
