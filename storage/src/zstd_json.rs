//! zstd for the JSON this crate stores (a part's footer, a catalog body):
//! both are mostly repetition and shrink ~10x. Decompression is bounded —
//! as every decoder here is — so a damaged object cannot claim memory.

use std::io::Read;

/// Most bytes compressed data may expand to, per compressed byte, beyond
/// [`EXPANSION_FREE`] (real footers and catalogs expand 10-20 times).
const EXPANSION_MAX: usize = 256;
/// Bytes any compressed data may expand to.
const EXPANSION_FREE: usize = 1 << 20;

/// Up to this many bytes are compressed at [`LEVEL_SMALL`] (~50 ms at
/// most), larger ones at level 3: a slow level on a multi-megabyte catalog
/// would lengthen every commit and its retries.
const SMALL_MAX: usize = 512 << 10;
/// zstd level for documents up to [`SMALL_MAX`]: ~20 % smaller than level
/// 3 on real footers and catalogs (hex tag values, series ids, measure
/// names), at ~0.1 µs a byte — 20 ms for a 200 KB footer.
const LEVEL_SMALL: i32 = 15;

/// Compresses `bytes`.
pub(crate) fn compress(bytes: &[u8]) -> Vec<u8> {
    let level = if bytes.len() <= SMALL_MAX { LEVEL_SMALL } else { 3 };
    // Compressing a buffer in memory fails only if memory does.
    zstd::bulk::compress(bytes, level).expect("zstd compresses a buffer")
}

/// Decompresses what [`compress`] made, to at most 1 MiB + 256 times its
/// size (the output grows as it is read, so a damaged length claims
/// nothing up front).
pub(crate) fn decompress(compressed: &[u8]) -> Result<Vec<u8>, String> {
    let limit = compressed.len().saturating_mul(EXPANSION_MAX).saturating_add(EXPANSION_FREE) as u64;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| e.to_string())?
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > limit {
        return Err(format!("expands past {limit} bytes from {}", compressed.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_expansion_is_bounded() {
        let json = br#"{"format":4}"#.repeat(1000);
        assert_eq!(decompress(&compress(&json)).unwrap(), json);
        // Eight MiB of zeros compress to a few hundred bytes: refused.
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], 19).unwrap();
        let err = decompress(&bomb).unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        assert!(decompress(b"not zstd").is_err());
    }
}
