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

/// A Bloom filter of series ids in 64-bit words, as catalog entries before
/// [`KeyFilter`] kept them (`series_filter`, `tag_filters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesFilter {
    words: Vec<u64>,
}

impl SeriesFilter {
    /// Builds a filter over `ids`, or `None` when there are none or too many.
    pub fn build(ids: &[u64]) -> Option<SeriesFilter> {
        if ids.is_empty() || ids.len() > FILTER_SERIES_MAX {
            return None;
        }
        let mut f = SeriesFilter { words: vec![0; (ids.len() * BITS_PER_SERIES).div_ceil(64)] };
        let bits = (f.words.len() * 64) as u64;
        for &id in ids {
            for bit in positions(id, bits) {
                f.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        Some(f)
    }

    /// False if `id` is certainly absent. An empty filter (never built;
    /// a damaged entry) rules nothing out.
    pub fn may_contain(&self, id: u64) -> bool {
        let bits = (self.words.len() * 64) as u64;
        bits == 0 || positions(id, bits).all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// A Bloom filter of 64-bit keys (series ids, [`tag_key_hash`]es) sized in
/// bytes, not words: a measure of one series and three tags has four keys,
/// 40 bits, which 64-bit words rounded up by a half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    bytes: Vec<u8>,
}

impl KeyFilter {
    /// Builds a filter over `keys` (bounded by the caller), `None` for none.
    pub fn build(keys: &[u64]) -> Option<KeyFilter> {
        if keys.is_empty() {
            return None;
        }
        let mut f = KeyFilter { bytes: vec![0; (keys.len() * BITS_PER_SERIES).div_ceil(8)] };
        let bits = (f.bytes.len() * 8) as u64;
        for &key in keys {
            for bit in positions(key, bits) {
                f.bytes[bit / 8] |= 1 << (bit % 8);
            }
        }
        Some(f)
    }

    /// False if `key` is certainly absent. An empty filter (never built;
    /// a damaged entry) rules nothing out.
    pub fn may_contain(&self, key: u64) -> bool {
        let bits = (self.bytes.len() * 8) as u64;
        bits == 0 || positions(key, bits).all(|bit| self.bytes[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

impl Serialize for KeyFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
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
        Ok(KeyFilter { bytes })
    }
}

impl Serialize for SeriesFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.words.iter().map(|w| format!("{w:016x}")).collect::<String>())
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
            .collect::<Result<_, _>>()?;
        Ok(SeriesFilter { words })
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
    }

    #[test]
    fn a_key_filter_takes_bytes_as_its_keys_need_and_round_trips() {
        let keys: Vec<u64> = (0..4u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let f = KeyFilter::build(&keys).unwrap();
        assert_eq!(f.bytes.len(), 5, "40 bits for 4 keys");
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
