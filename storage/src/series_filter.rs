//! A small Bloom filter over the series ids of a part's measure (and, from
//! catalog entries of 2026-12, its tags' values under [`tag_key_hash`]),
//! kept in the catalog entry so a query for known series or tag values
//! skips parts without reading them. Series ids are already hashes, so the
//! probe positions come straight from their bits (double hashing).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bits per series; with 6 probes this gives about a 1% false-positive rate.
const BITS_PER_SERIES: usize = 10;
const PROBES: u64 = 6;
/// Parts with more series than this get no filter (it would bloat the catalog).
pub const FILTER_SERIES_MAX: usize = 1024;

/// The hash a tag value is kept under in a part's tag filters.
pub fn tag_value_hash(v: &canopy_model::TagVal) -> u64 {
    let mut buf = Vec::with_capacity(32);
    v.encode(&mut buf);
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// The key a tag's value is kept under in a measure's one filter of series
/// ids and tag values ([`crate::MeasureStats::keys`]): the tag's name is
/// part of it, so `job="node"` and `instance="node"` are different keys.
pub fn tag_key_hash(tag: &str, v: &canopy_model::TagVal) -> u64 {
    let mut buf = Vec::with_capacity(tag.len() + 33);
    buf.extend_from_slice(tag.as_bytes());
    // A tag name holds no 0xff (it is UTF-8), so the name ends here.
    buf.push(0xff);
    v.encode(&mut buf);
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// Bloom filter probe positions of `key` in a filter of `bits` bits.
fn positions(key: u64, bits: u64) -> impl Iterator<Item = usize> {
    let (h1, h2) = (key & 0xffff_ffff, (key >> 32) | 1);
    (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
}

/// Bloom filter bits: bit `b` is bit `b % 8` of `bytes[b / 8]`. Both
/// filters keep this layout; [`SeriesFilter`]'s 64-bit words are these
/// bytes read little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bloom {
    bytes: Vec<u8>,
}

impl Bloom {
    /// `len` bytes holding `keys`.
    fn new(keys: &[u64], len: usize) -> Bloom {
        let mut f = Bloom { bytes: vec![0; len] };
        let bits = (len * 8) as u64;
        for &key in keys {
            for bit in positions(key, bits) {
                f.bytes[bit / 8] |= 1 << (bit % 8);
            }
        }
        f
    }

    /// False if `key` is certainly absent. An empty filter (never built;
    /// a damaged entry) rules nothing out.
    fn may_contain(&self, key: u64) -> bool {
        let bits = (self.bytes.len() * 8) as u64;
        bits == 0 || positions(key, bits).all(|bit| self.bytes[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

/// A Bloom filter of series ids in 64-bit words, as catalog entries before
/// [`KeyFilter`] kept them (`series_filter`, `tag_filters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesFilter {
    bloom: Bloom,
}

impl SeriesFilter {
    /// Builds a filter over `ids`, or `None` when there are none or too many.
    pub fn build(ids: &[u64]) -> Option<SeriesFilter> {
        if ids.is_empty() || ids.len() > FILTER_SERIES_MAX {
            return None;
        }
        Some(SeriesFilter { bloom: Bloom::new(ids, (ids.len() * BITS_PER_SERIES).div_ceil(64) * 8) })
    }

    /// False if `id` is certainly absent. An empty filter (never built;
    /// a damaged entry) rules nothing out.
    pub fn may_contain(&self, id: u64) -> bool {
        self.bloom.may_contain(id)
    }
}

/// A Bloom filter of 64-bit keys (series ids, [`tag_key_hash`]es) sized in
/// bytes, not words: a measure of one series and three tags has four keys,
/// 40 bits, which 64-bit words rounded up by a half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    bloom: Bloom,
}

impl KeyFilter {
    /// Builds a filter over `keys` (bounded by the caller), `None` for none.
    pub fn build(keys: &[u64]) -> Option<KeyFilter> {
        (!keys.is_empty()).then(|| KeyFilter { bloom: Bloom::new(keys, (keys.len() * BITS_PER_SERIES).div_ceil(8)) })
    }

    /// False if `key` is certainly absent. An empty filter (never built;
    /// a damaged entry) rules nothing out.
    pub fn may_contain(&self, key: u64) -> bool {
        self.bloom.may_contain(key)
    }
}

impl Serialize for KeyFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.bloom.bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

impl<'de> Deserialize<'de> for KeyFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyFilter, D::Error> {
        let hex = String::deserialize(d)?;
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom("key filter: odd length or not hex"));
        }
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(serde::de::Error::custom))
            .collect::<Result<_, _>>()?;
        Ok(KeyFilter { bloom: Bloom { bytes } })
    }
}

impl Serialize for SeriesFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let words = self.bloom.bytes.chunks(8).map(|w| u64::from_le_bytes(w.try_into().expect("whole words")));
        s.serialize_str(&words.map(|w| format!("{w:016x}")).collect::<String>())
    }
}

impl<'de> Deserialize<'de> for SeriesFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SeriesFilter, D::Error> {
        let hex = String::deserialize(d)?;
        if hex.len() % 16 != 0 {
            return Err(serde::de::Error::custom("series filter length is not a multiple of 16"));
        }
        let words = (0..hex.len() / 16)
            .map(|i| u64::from_str_radix(&hex[16 * i..16 * i + 16], 16).map_err(serde::de::Error::custom))
            .collect::<Result<Vec<u64>, _>>()?;
        Ok(SeriesFilter { bloom: Bloom { bytes: words.iter().flat_map(|w| w.to_le_bytes()).collect() } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_found_and_most_others_are_not() {
        let ids: Vec<u64> = (0..500u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let f = SeriesFilter::build(&ids).unwrap();
        assert!(ids.iter().all(|&i| f.may_contain(i)));
        let false_pos = (1000..11_000u64).map(|i| i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)).filter(|&i| f.may_contain(i)).count();
        assert!(false_pos < 300, "{false_pos} false positives in 10,000");
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<SeriesFilter>(&json).unwrap(), f);
        assert!(SeriesFilter::build(&vec![1; FILTER_SERIES_MAX + 1]).is_none());
        // What the word-based builds wrote for these ids (catalogs hold it).
        let five: Vec<u64> = (1..6u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let written = serde_json::to_string(&SeriesFilter::build(&five).unwrap()).unwrap();
        assert_eq!(written, "\"824c17a1623161d9\"");
        assert!(five.iter().all(|&i| serde_json::from_str::<SeriesFilter>(&written).unwrap().may_contain(i)));
    }

    #[test]
    fn a_key_filter_takes_bytes_as_its_keys_need_and_round_trips() {
        let keys: Vec<u64> = (0..4u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let f = KeyFilter::build(&keys).unwrap();
        assert_eq!(f.bloom.bytes.len(), 5, "40 bits for 4 keys");
        assert!(keys.iter().all(|&k| f.may_contain(k)));
        let many: Vec<u64> = (0..500u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let f = KeyFilter::build(&many).unwrap();
        let false_pos = (1000..11_000u64).map(|i| i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)).filter(|&i| f.may_contain(i)).count();
        assert!(false_pos < 300, "{false_pos} false positives in 10,000");
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<KeyFilter>(&json).unwrap(), f);
        assert!(serde_json::from_str::<KeyFilter>("\"abc\"").is_err() && serde_json::from_str::<KeyFilter>("\"zz\"").is_err());
        assert!(serde_json::from_str::<KeyFilter>("\"+f\"").is_err());
        assert!(KeyFilter::build(&[]).is_none());
        let empty: KeyFilter = serde_json::from_str("\"\"").unwrap();
        assert!(empty.may_contain(7), "an empty filter rules nothing out");
    }
}
