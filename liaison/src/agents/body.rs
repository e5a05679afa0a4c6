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
    let len = snap::raw::decompress_len(body).map_err(|e| ApiError::invalid("body", format!("bad snappy: {e}")))?;
    if len > max {
        return Err(ApiError::invalid("body", format!("{len} bytes once decompressed, the limit is {max}")));
    }
    snap::raw::Decoder::new().decompress_vec(body).map_err(|e| ApiError::invalid("body", format!("bad snappy: {e}")))
}
