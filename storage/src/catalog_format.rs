//! The catalog's on-disk versions and their conversion into the in-memory
//! [`CatalogState`].
//!
//! Every version shares the frame `b"CNCT"`, format version (u32 LE), CRC32
//! of the body (u32 LE), then a JSON body whose shape the version fixes:
//!
//! * **1** — written by the first builds. Its body carried one
//!   `wal_watermark` per shard (one writer per shard, before WAL ids); later
//!   builds kept the number 1 but wrote per-WAL `watermarks` and a
//!   `commit_id`. Both shapes decode: a single `wal_watermark` becomes the
//!   watermark of [`LEGACY_WAL_ID`], the WAL id an ingester data directory
//!   from those builds adopts.
//! * **2** — every field required (`watermarks` per WAL id, `commit_id`,
//!   `claims`, `pending_deletes`).
//! * **3** — today's: the body of version 2, zstd-compressed (the CRC is of
//!   the stored bytes). A catalog lists every part with per-measure
//!   statistics and filters, a few hundred bytes each in JSON, and is
//!   rewritten at every commit; compressed it is ~10x smaller.
//!
//! The entries (`PartMeta`, `CompactionClaim`, `PendingDelete`) have kept
//! their shape since version 1 and are shared by all; changing one means a
//! version 4 with its own copies, and a decoder here for every older version.
//! Optional pruning statistics are the exception (`MeasureStats`'
//! `tag_filters`, later `keys`): absent they mean "may hold anything", so an
//! entry without them, or a build that ignores them, stays correct.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogState, CompactionClaim, PartMeta, PendingDelete};

const MAGIC: &[u8; 4] = b"CNCT";
/// The format this build writes.
pub const CATALOG_FORMAT: u32 = 3;
/// Whose WAL a format-1 `wal_watermark` counts: the WAL of an ingester
/// from before WAL ids (standalone), which keeps this id after an upgrade.
pub const LEGACY_WAL_ID: &str = "legacy";

/// Why bytes are not a catalog version this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogFormatError {
    #[error("not a catalog version (bad magic or shorter than its header)")]
    BadMagic,
    #[error("unsupported catalog format {0} (this build reads 1, 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("checksum mismatch")]
    Checksum,
    #[error("catalog format {version}: {error}")]
    Body { version: u32, error: String },
    #[error("catalog format 1 without wal_watermark or watermarks")]
    NoWatermark,
}

/// Format 1, in both shapes it was written in.
#[derive(Deserialize)]
struct CatalogV1 {
    group: String,
    shard: u32,
    version: u64,
    epoch: u64,
    #[serde(default)]
    wal_watermark: Option<u64>,
    #[serde(default)]
    watermarks: Option<BTreeMap<String, u64>>,
    next_part_id: u64,
    parts: Vec<PartMeta>,
    #[serde(default)]
    claims: Vec<CompactionClaim>,
    #[serde(default)]
    pending_deletes: Vec<PendingDelete>,
    #[serde(default)]
    commit_id: String,
}

/// Format 2.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogV2 {
    group: String,
    shard: u32,
    version: u64,
    epoch: u64,
    watermarks: BTreeMap<String, u64>,
    next_part_id: u64,
    parts: Vec<PartMeta>,
    claims: Vec<CompactionClaim>,
    pending_deletes: Vec<PendingDelete>,
    commit_id: String,
}

impl From<CatalogV2> for CatalogState {
    fn from(c: CatalogV2) -> CatalogState {
        let CatalogV2 { group, shard, version, epoch, watermarks, next_part_id, parts, claims, pending_deletes, commit_id } = c;
        CatalogState { group, shard, version, epoch, watermarks, next_part_id, parts, claims, pending_deletes, commit_id }
    }
}

impl TryFrom<CatalogV1> for CatalogState {
    type Error = CatalogFormatError;

    fn try_from(c: CatalogV1) -> Result<CatalogState, CatalogFormatError> {
        let watermarks = match (c.watermarks, c.wal_watermark) {
            (Some(w), _) => w,
            (None, Some(w)) => BTreeMap::from([(LEGACY_WAL_ID.to_string(), w)]),
            (None, None) => return Err(CatalogFormatError::NoWatermark),
        };
        Ok(CatalogState {
            group: c.group,
            shard: c.shard,
            version: c.version,
            epoch: c.epoch,
            watermarks,
            next_part_id: c.next_part_id,
            parts: c.parts,
            claims: c.claims,
            pending_deletes: c.pending_deletes,
            commit_id: c.commit_id,
        })
    }
}

/// Encodes a catalog version in today's format.
pub(crate) fn encode(c: &CatalogState) -> Vec<u8> {
    let v2 = CatalogV2 {
        group: c.group.clone(),
        shard: c.shard,
        version: c.version,
        epoch: c.epoch,
        watermarks: c.watermarks.clone(),
        next_part_id: c.next_part_id,
        parts: c.parts.clone(),
        claims: c.claims.clone(),
        pending_deletes: c.pending_deletes.clone(),
        commit_id: c.commit_id.clone(),
    };
    let body = crate::zstd_json::compress(&serde_json::to_vec(&v2).expect("catalog state serializes"));
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&CATALOG_FORMAT.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A catalog version's frame: (format, CRC32 as written, stored body),
/// the format one this build reads.
fn frame(b: &[u8]) -> Result<(u32, u32, &[u8]), CatalogFormatError> {
    if b.len() < 12 || &b[..4] != MAGIC {
        return Err(CatalogFormatError::BadMagic);
    }
    let version = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    if !matches!(version, 1..=3) {
        return Err(CatalogFormatError::UnsupportedVersion(version));
    }
    Ok((version, u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")), &b[12..]))
}

/// The JSON of a stored body: as stored (formats 1-2) or decompressed (3).
fn json_of(version: u32, body: &[u8]) -> Result<Cow<'_, [u8]>, CatalogFormatError> {
    match version {
        1 | 2 => Ok(Cow::Borrowed(body)),
        _ => crate::zstd_json::decompress(body).map(Cow::Owned).map_err(|error| CatalogFormatError::Body { version, error }),
    }
}

/// The JSON body of a catalog version of any format (decompressed for
/// format 3), unchecked against its CRC: for tools and tests that read
/// catalog versions as documents.
pub fn body_json(b: &[u8]) -> Result<Vec<u8>, CatalogFormatError> {
    let (version, _, body) = frame(b)?;
    Ok(json_of(version, body)?.into_owned())
}

/// Decodes a catalog version of any format this build knows.
pub(crate) fn decode(b: &[u8]) -> Result<CatalogState, CatalogFormatError> {
    let (version, crc, body) = frame(b)?;
    if crc32fast::hash(body) != crc {
        return Err(CatalogFormatError::Checksum);
    }
    let json = json_of(version, body)?;
    let bad_body = |e: serde_json::Error| CatalogFormatError::Body { version, error: e.to_string() };
    match version {
        1 => serde_json::from_slice::<CatalogV1>(&json).map_err(bad_body)?.try_into(),
        _ => Ok(serde_json::from_slice::<CatalogV2>(&json).map_err(bad_body)?.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_round_trips_and_damage_is_named() {
        let mut c = CatalogState::empty("g", 2);
        c.watermarks.insert("w".into(), 9);
        let b = encode(&c);
        assert_eq!(decode(&b), Ok(c));
        let mut flipped = b.clone();
        let n = flipped.len();
        flipped[n - 2] ^= 1;
        assert_eq!(decode(&flipped), Err(CatalogFormatError::Checksum));
        let mut future = b.clone();
        future[4] = 4;
        assert_eq!(decode(&future), Err(CatalogFormatError::UnsupportedVersion(4)));
        assert_eq!(decode(b"CNC"), Err(CatalogFormatError::BadMagic));
    }

    #[test]
    fn a_format_1_body_without_any_watermark_is_refused() {
        let body = br#"{"group":"g","shard":0,"version":1,"epoch":1,"next_part_id":1,"parts":[]}"#;
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        b.extend_from_slice(body);
        assert_eq!(decode(&b), Err(CatalogFormatError::NoWatermark));
    }

    /// Damaged catalogs are refused cleanly — with the checksum as written
    /// (which catches them) and recomputed over the damage (so the parser
    /// itself sees it).
    #[test]
    fn damaged_catalogs_are_refused_without_panic() {
        use canopy_model::testing::fuzz_decoder;
        let mut c = CatalogState::empty("g", 2);
        c.watermarks.insert("w".into(), 9);
        let summary = crate::part::PartSummary { bytes: 100, footer_bytes: 20, rows: 7, min_ts: 1, max_ts: 9, ..Default::default() };
        c.parts.push(crate::catalog::PartMeta::new(3, "g/0002/p.arrow".into(), 0, 1 << 40, 9, 1, summary));
        c.next_part_id = 4;
        let valid = vec![encode(&c), encode(&CatalogState::empty("g", 0))];
        fuzz_decoder("catalog", &valid, 3000, decode);
        fuzz_decoder("catalog, checksum fixed", &valid, 3000, |b| {
            let mut b = b.to_vec();
            if b.len() >= 12 {
                let crc = crc32fast::hash(&b[12..]);
                b[8..12].copy_from_slice(&crc.to_le_bytes());
            }
            decode(&b)
        });
    }
}
