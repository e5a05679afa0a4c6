//! Where format 8 keeps a part's footer: its zstd-compressed JSON as raw
//! bytes just before the Arrow end-of-stream marker, with only their length
//! and CRC32 in the Arrow footer's metadata. Formats 4–7 carried the bytes
//! in that metadata, which holds only strings: base64 (+33 %), then 7-bit
//! characters (+14 %, ~2 KB of a real Prometheus' 16 KB footers). Arrow
//! readers find batches through the Arrow footer, so bytes between the last
//! batch and the end-of-stream marker are invisible to them: the object is
//! still a plain Arrow IPC file.
//!
//! Layout of a part's end: `… last batch | blob | zero padding to 8 bytes |
//! end-of-stream marker (8 bytes) | Arrow footer | footer length (4) | "ARROW1"`.

/// Arrow footer metadata key: the blob's length and CRC32, `"{len},{crc32}"`.
pub(crate) const FOOTER_BLOB_KEY: &str = "canopy.part.zb";
/// The end-of-stream marker the Arrow file writer puts before its footer:
/// a continuation marker and a zero metadata length.
const EOS: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/// The bytes written before the end-of-stream marker for `blob` (padded
/// so the marker stays 8-byte aligned), and the metadata value naming them.
pub(crate) fn frame(blob: &[u8]) -> (Vec<u8>, String) {
    let mut bytes = blob.to_vec();
    bytes.resize(padded(blob.len()), 0);
    (bytes, format!("{},{}", blob.len(), crc32fast::hash(blob)))
}

/// Bytes a reader must fetch from the end of the part beyond the Arrow
/// footer and trailer to read a blob of `len` bytes.
pub(crate) fn tail_extra(len: usize) -> u64 {
    (padded(len) + EOS.len()) as u64
}

fn padded(len: usize) -> usize {
    len.next_multiple_of(8)
}

/// The blob `value` (the [`FOOTER_BLOB_KEY`] metadata) names, in `tail`
/// (the part's last bytes) whose Arrow footer starts at `footer_start`.
pub(crate) fn find<'a>(tail: &'a [u8], footer_start: usize, value: &str) -> Result<&'a [u8], String> {
    let (len, crc) = value.split_once(',').ok_or_else(|| format!("{FOOTER_BLOB_KEY}: {value:?} is not \"len,crc32\""))?;
    let len: usize = len.parse().map_err(|_| format!("{FOOTER_BLOB_KEY}: bad length {len:?}"))?;
    let crc: u32 = crc.parse().map_err(|_| format!("{FOOTER_BLOB_KEY}: bad CRC32 {crc:?}"))?;
    let eos = footer_start.checked_sub(EOS.len()).ok_or("no end-of-stream marker before the footer")?;
    if tail[eos..footer_start] != EOS {
        return Err("no end-of-stream marker before the footer".into());
    }
    // `len` is not checked yet (the Arrow footer has no checksum): bound it
    // before padding it.
    let too_long = || format!("a footer of {len} bytes exceeds the {} bytes read", tail.len());
    let start = if len > eos { None } else { eos.checked_sub(padded(len)) }.ok_or_else(too_long)?;
    let blob = &tail[start..start + len];
    if crc32fast::hash(blob) != crc {
        return Err(format!("{FOOTER_BLOB_KEY}: checksum mismatch"));
    }
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_blob_is_found_again_and_damage_is_noticed() {
        let blob = b"compressed footer".to_vec();
        let (bytes, value) = frame(&blob);
        assert_eq!(bytes.len() % 8, 0);
        let mut tail = b"batch".to_vec();
        tail.extend(&bytes);
        tail.extend(EOS);
        let footer_start = tail.len();
        tail.extend(b"arrow footer");
        assert_eq!(find(&tail, footer_start, &value), Ok(&blob[..]));
        assert_eq!(tail_extra(blob.len()), (footer_start - 5) as u64);
        // Read too short, a flipped byte, a missing marker, a bad value.
        assert!(find(&tail[10..], footer_start - 10, &value).is_err());
        let mut bad = tail.clone();
        bad[6] ^= 1;
        assert!(find(&bad, footer_start, &value).unwrap_err().contains("checksum"));
        bad = tail.clone();
        bad[footer_start - 1] = 1;
        assert!(find(&bad, footer_start, &value).unwrap_err().contains("end-of-stream"));
        assert!(find(&tail, footer_start, "17").is_err());
        // A length near usize::MAX (the Arrow footer is not checksummed) is an error, not a panic.
        assert!(find(&tail, footer_start, &format!("{},0", usize::MAX)).unwrap_err().contains("exceeds"));
        assert!(find(&tail, footer_start, &format!("{},0", footer_start - 8)).unwrap_err().contains("exceeds"));
    }
}
