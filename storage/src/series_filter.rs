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

/// A Bloom filter of 64-bit keys (series ids, tag value hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesFilter {
    words: Vec<u64>,
}

impl SeriesFilter {
    /// Builds a filter over `ids`, or `None` when there are too many.
    pub fn build(ids: &[u64]) -> Option<SeriesFilter> {
        if ids.len() > FILTER_SERIES_MAX {
            return None;
        }
        Self::over(ids)
    }

    /// Builds a filter over `keys`, however many (`None` for none): for a
    /// measure's keys, already bounded per tag by [`FILTER_SERIES_MAX`].
    pub fn over(ids: &[u64]) -> Option<SeriesFilter> {
        if ids.is_empty() {
            return None;
        }
        let mut f = SeriesFilter { words: vec![0; (ids.len() * BITS_PER_SERIES).div_ceil(64)] };
        for &id in ids {
            let bits: Vec<usize> = f.positions(id).collect();
            for bit in bits {
                f.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        Some(f)
    }

    /// False if `id` is certainly absent.
    pub fn may_contain(&self, id: u64) -> bool {
        !self.words.is_empty() && self.positions(id).all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn positions(&self, id: u64) -> impl Iterator<Item = usize> + '_ {
        let bits = (self.words.len() * 64) as u64;
        let (h1, h2) = (id & 0xffff_ffff, (id >> 32) | 1);
        (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
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
}
