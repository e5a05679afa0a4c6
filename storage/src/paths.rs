//! Every object-store key Canopy writes, built in one place.
//!
//! ```text
//! catalog/{group}/{shard:04}/v{version:020}.cat   one catalog version (immutable)
//! catalog/{group}/{shard:04}/_latest              hint: the newest version number
//! parts/{group}/{shard:04}/{segment_secs}/{part_id:016x}-{nonce:08x}.arrow
//! _canopy/probe/{pid}-{nanos}                      start-up probe (deleted at once)
//! ```
//! Zero padding makes listing order equal numeric order.

use object_store::path::Path;

/// Directory of a shard's catalog versions.
/// Where the start-up probe of create-if-absent writes its keys (deleted at
/// once; a crash in between leaves one for GC).
pub const PROBE_DIR: &str = "_canopy/probe";

/// A probe key of this process, unique per call.
pub fn probe(pid: u32, nanos: u128) -> Path {
    Path::from(format!("{PROBE_DIR}/{pid}-{nanos}"))
}

pub fn catalog_dir(group: &str, shard: u32) -> Path {
    Path::from(format!("catalog/{group}/{shard:04}"))
}

/// Key of one catalog version.
pub fn catalog_version(group: &str, shard: u32, version: u64) -> Path {
    Path::from(format!("catalog/{group}/{shard:04}/v{version:020}.cat"))
}

/// Key of the newest-version hint of a shard's catalog.
pub fn catalog_hint(group: &str, shard: u32) -> Path {
    Path::from(format!("catalog/{group}/{shard:04}/_latest"))
}

/// Parses the version number out of a catalog version key's file name.
pub fn parse_catalog_version(file_name: &str) -> Option<u64> {
    file_name.strip_prefix('v')?.strip_suffix(".cat")?.parse().ok()
}

/// Key of a part. The nonce keeps a retried upload from overwriting an
/// orphan left by a crashed one with the same id.
pub fn part(group: &str, shard: u32, segment_start_nanos: i64, part_id: u64, nonce: u32) -> String {
    let secs = segment_start_nanos.div_euclid(1_000_000_000);
    format!("parts/{group}/{shard:04}/{secs}/{part_id:016x}-{nonce:08x}.arrow")
}

/// Whether an object key names a part (written once, never changed: what a
/// cache may keep).
pub fn is_part(key: &str) -> bool {
    key.starts_with("parts/")
}

/// A nonce for a part key: distinct across processes and retries, so an
/// upload never lands on an object another (crashed) upload left behind.
pub fn nonce() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16) ^ (t.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_parse_back_and_sort_numerically() {
        let a = catalog_version("g", 3, 9).to_string();
        let b = catalog_version("g", 3, 10).to_string();
        assert!(a < b);
        assert_eq!(parse_catalog_version(a.rsplit('/').next().unwrap()), Some(9));
        assert_eq!(parse_catalog_version("_latest"), None);
        assert_eq!(part("g", 1, 86_400_000_000_000, 255, 1), "parts/g/0001/86400/00000000000000ff-00000001.arrow");
    }
}
