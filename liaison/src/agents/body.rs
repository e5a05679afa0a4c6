//! Request bodies of agent protocols: size limits and decompression.

use std::io::Read;

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::error::{ApiError, Code};

/// Decompresses a body by its `Content-Encoding` (gzip or none), refusing
/// to produce more than `max` bytes.
pub(crate) fn decode_body(headers: &HeaderMap, body: &Bytes, max: usize) -> Result<Vec<u8>, ApiError> {
    let encoding = headers.get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            let mut r = flate2::read::MultiGzDecoder::new(body.as_ref()).take(max as u64 + 1);
            r.read_to_end(&mut out).map_err(|e| ApiError::invalid("body", format!("bad gzip: {e}")))?;
            if out.len() > max {
                return Err(ApiError::new(Code::InvalidArgument, format!("body: more than {max} bytes once decompressed")));
            }
            Ok(out)
        }
        other => Err(ApiError::invalid("Content-Encoding", format!("unsupported {other:?}; use gzip or none"))),
    }
}

/// Decompresses a snappy block-format body (Prometheus remote write/read).
pub(crate) fn decode_snappy(body: &Bytes, max: usize) -> Result<Vec<u8>, ApiError> {
    snappy_len(body, max)?;
    snap::raw::Decoder::new().decompress_vec(body).map_err(bad_snappy)
}

/// Largest decompressed body whose buffer a thread keeps for its next
/// request (see [`with_snappy_body`]): remote-write bodies are mostly far
/// smaller; a rare larger one gets a buffer of its own. What the threads
/// keep is bounded by this per runtime worker.
const SCRATCH_KEPT_MAX: usize = 8 << 20;

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` over a snappy block-format body decompressed into a buffer the
/// thread reuses: a fresh buffer per request cost a page-zeroing
/// allocation the size of the body, each time. `f` is synchronous, so the
/// buffer is never held across an await.
pub(crate) fn with_snappy_body<R>(body: &Bytes, max: usize, f: impl FnOnce(&[u8]) -> Result<R, ApiError>) -> Result<R, ApiError> {
    let len = snappy_len(body, max)?;
    let mut buf = if len <= SCRATCH_KEPT_MAX { SCRATCH.take() } else { Vec::new() };
    // Grown (and zeroed) only past the largest body seen; never shrunk.
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let n = snap::raw::Decoder::new().decompress(body, &mut buf[..len]).map_err(bad_snappy)?;
    let r = f(&buf[..n]);
    if buf.len() <= SCRATCH_KEPT_MAX {
        SCRATCH.set(buf);
    }
    r
}

/// The decompressed length a snappy body declares, if within `max`.
fn snappy_len(body: &Bytes, max: usize) -> Result<usize, ApiError> {
    let len = snap::raw::decompress_len(body).map_err(bad_snappy)?;
    if len > max {
        return Err(ApiError::invalid("body", format!("{len} bytes once decompressed, the limit is {max}")));
    }
    Ok(len)
}

fn bad_snappy(e: snap::Error) -> ApiError {
    ApiError::invalid("body", format!("bad snappy: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snappy(data: &[u8]) -> Bytes {
        Bytes::from(snap::raw::Encoder::new().compress_vec(data).unwrap())
    }

    #[test]
    fn a_reused_buffer_gives_each_body_exactly_its_own_bytes() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let got = with_snappy_body(&snappy(&big), 1 << 20, |b| Ok(b.to_vec())).unwrap();
        assert_eq!(got, big);
        // Smaller after larger, on the same thread: none of the earlier bytes show.
        assert_eq!(with_snappy_body(&snappy(b"bc"), 1 << 20, |b| Ok(b.to_vec())).unwrap(), b"bc");
        assert_eq!(with_snappy_body(&snappy(b""), 1 << 20, |b| Ok(b.len())).unwrap(), 0);
        // Over the limit, or damaged: a 400 naming the body, and the next body still decodes.
        let over = with_snappy_body(&snappy(&big), 1000, |_| Ok(())).unwrap_err();
        assert!(over.to_string().contains("limit is 1000"), "{over}");
        let mut damaged = snappy(&big).to_vec();
        damaged.truncate(damaged.len() / 2);
        assert!(with_snappy_body(&Bytes::from(damaged), 1 << 20, |_| Ok(())).is_err());
        assert_eq!(with_snappy_body(&snappy(b"xyz"), 1 << 20, |b| Ok(b.to_vec())).unwrap(), b"xyz");
    }
}
