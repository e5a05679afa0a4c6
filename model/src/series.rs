//! Series identity and shard routing.
//!
//! The series key of a point is `measure name ++ 0x00 ++ encode(v)` for each
//! entity tag value `v` in entity order (encoding of [`TagVal::encode`]).
//! The series id is `xxh3_64(series key)` and the shard is
//! `series id % shard_num`. Both are stable across versions and processes:
//! changing them would move existing series to other shards.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use xxhash_rust::xxh3::xxh3_64;

use crate::value::TagVal;

/// A 64-bit series identifier, `xxh3_64` of the series key.
pub type SeriesId = u64;

/// The series id of a measure's entity values.
pub fn series_id<'a>(measure: &str, entity: impl IntoIterator<Item = &'a TagVal>) -> SeriesId {
    let mut key = Vec::with_capacity(64);
    key.extend_from_slice(measure.as_bytes());
    key.push(0);
    for v in entity {
        v.encode(&mut key);
    }
    xxh3_64(&key)
}

/// The shard owning a series.
pub fn shard_of(series: SeriesId, shard_num: u32) -> u32 {
    debug_assert!(shard_num > 0);
    (series % shard_num as u64) as u32
}

/// A hash map keyed by something that is a hash or an address already
/// (series ids are xxh3 hashes): hashing those again with SipHash on every
/// point is wasted work.
pub type IdMap<K, V> = HashMap<K, V, IdState>;

/// A hash map keyed by series id.
pub type SeriesMap<V> = IdMap<SeriesId, V>;

/// Builds the hashers of an [`IdMap`], each map with its own random key:
/// series ids derive from what clients send, and a fixed function would let
/// a client pick ids that crowd one bucket.
#[derive(Debug, Clone, Copy)]
pub struct IdState(u64);

impl Default for IdState {
    fn default() -> IdState {
        IdState(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }
}

impl BuildHasher for IdState {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

/// The hasher of [`IdMap`]: the key, mixed with the map's key, multiplied
/// and folded once. A shard's ids all leave the same remainder by the shard
/// count and addresses are aligned, so the low bits alone would crowd a
/// table's buckets; the multiply and fold spread them.
#[derive(Debug, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, id: u64) {
        let h = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    fn write_usize(&mut self, id: usize) {
        self.write_u64(id as u64);
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: u64 = 1_737_646_906_568_695_857;

    #[test]
    fn series_id_is_stable_and_distinguishes_measures_and_values() {
        let a = series_id("cpu", &[TagVal::Str("h1".into())]);
        // Pinned: a change here would re-shard every stored series.
        assert_eq!(a, PINNED);
        assert_eq!(shard_of(a, 7), (PINNED % 7) as u32);
        assert_ne!(a, series_id("mem", &[TagVal::Str("h1".into())]));
        assert_ne!(a, series_id("cpu", &[TagVal::Str("h2".into())]));
        assert_ne!(
            series_id("cpu", &[TagVal::Str("ab".into()), TagVal::Str("c".into())]),
            series_id("cpu", &[TagVal::Str("a".into()), TagVal::Str("bc".into())]),
        );
    }

    #[test]
    fn id_maps_spread_the_ids_of_one_shard_over_their_buckets() {
        // Every id of shard 0 of 4 is a multiple of 4; their hashes' low bits must still vary.
        let ids = (0..4096u64).map(|i| series_id("cpu", &[TagVal::Int(i as i64)])).filter(|id| shard_of(*id, 4) == 0);
        let build = IdState::default();
        let mut buckets = [0u32; 64];
        let mut n = 0;
        for id in ids {
            buckets[(build.hash_one(id) % 64) as usize] += 1;
            n += 1;
        }
        assert!(buckets.iter().all(|&b| b > 0 && (b as usize) < n / 16), "{buckets:?}");
    }

    #[test]
    fn shards_spread_series() {
        let mut counts = [0u32; 4];
        for i in 0..1000 {
            let id = series_id("cpu", &[TagVal::Int(i)]);
            counts[shard_of(id, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    }
}
