//! Label sets as agents send them, interned: a decoder that borrows labels
//! from the request body asks here for the shared [`Labels`] of a set, and
//! gets the one allocated when the set was first seen — the same allocation
//! across requests and across metrics with the same labels, which
//! [`super::known_series`] then finds by address.
//!
//! Remote write's label sets are also kept by their bytes on the wire
//! ([`Interning::by_wire`]): a series sent again (every scrape sends it) is
//! found by one hash and one compare of those bytes, without parsing,
//! validating or hashing its labels one by one.
//!
//! Bounded (invariant 6): past [`LABEL_SETS_BYTES_MAX`] the sets are dropped
//! and re-interned as they come.

use std::hash::Hasher;
use std::sync::{Arc, Mutex, MutexGuard};

use canopy_model::IdMap;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::autoschema::Labels;

/// Most bytes the interned label sets may hold.
pub(crate) const LABEL_SETS_BYTES_MAX: usize = 64 << 20;

/// Most sets kept under one 64-bit hash. Distinct sets share a hash only
/// when someone made them to (xxh3 is not keyed): past this they are
/// returned without being kept, so a lookup never scans a long list.
const SAME_HASH_MAX: usize = 4;

/// The hash of a label set, in the order given.
pub(crate) fn hash<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = Xxh3::new();
    for (k, v) in labels {
        h.write_usize(k.len());
        h.write(k.as_bytes());
        h.write_usize(v.len());
        h.write(v.as_bytes());
    }
    h.finish()
}

/// The interned label sets.
#[derive(Debug, Default)]
pub(crate) struct LabelSets {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_hash: IdMap<u64, Vec<Labels>>,
    /// Label fields as sent → what they parsed to.
    by_wire: IdMap<u64, Vec<WireEntry>>,
    bytes: usize,
}

/// Label fields as sent, and what they parsed to.
type WireEntry = (Box<[u8]>, Arc<WireLabels>);

/// What a remote-write series' label fields parsed to.
#[derive(Debug)]
pub(crate) struct WireLabels {
    /// `__name__`, if sent.
    pub(crate) name: Option<Box<str>>,
    /// The other labels with a value, interned.
    pub(crate) labels: Labels,
    /// Bytes of every label as sent, for the request's expansion budget.
    pub(crate) label_bytes: usize,
}

/// The sets, locked for one request.
pub(crate) struct Interning<'a>(MutexGuard<'a, State>);

impl LabelSets {
    /// Locks the sets for a request's decoding.
    pub(crate) fn lock(&self) -> Interning<'_> {
        Interning(self.state.lock().expect("label sets lock"))
    }
}

impl Interning<'_> {
    /// The shared allocation of `labels` (in this order).
    pub(crate) fn intern(&mut self, labels: &[(&str, &str)]) -> Labels {
        self.intern_iter(labels.iter().copied())
    }

    /// [`Interning::intern`] of pairs from an iterator (walked up to three times).
    pub(crate) fn intern_iter<'s, I>(&mut self, labels: I) -> Labels
    where
        I: Iterator<Item = (&'s str, &'s str)> + ExactSizeIterator + Clone,
    {
        let h = hash(labels.clone());
        let same = |l: &Labels| l.len() == labels.len() && l.iter().zip(labels.clone()).all(|((a, b), (c, d))| a == c && b == d);
        if let Some(found) = self.0.by_hash.get(&h).and_then(|v| v.iter().find(|l| same(l))) {
            return found.clone();
        }
        let set: Labels = Arc::new(labels.clone().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        if self.0.by_hash.get(&h).is_some_and(|v| v.len() >= SAME_HASH_MAX) {
            return set;
        }
        self.reserve(labels.map(|(k, v)| k.len() + v.len() + 64).sum::<usize>() + 64);
        self.0.by_hash.entry(h).or_default().push(set.clone());
        set
    }

    /// What the label fields `raw` (a series' as sent) parse to: `parse`
    /// runs the first time these bytes are seen, later the kept answer is
    /// returned. A parse that fails is not kept.
    pub(crate) fn by_wire<E>(&mut self, raw: &[u8], parse: impl FnOnce(&mut Self) -> Result<WireLabels, E>) -> Result<Arc<WireLabels>, E> {
        let h = xxh3_64(raw);
        if let Some((_, found)) = self.0.by_wire.get(&h).and_then(|v| v.iter().find(|(r, _)| **r == *raw)) {
            return Ok(found.clone());
        }
        let parsed = Arc::new(parse(self)?);
        if self.0.by_wire.get(&h).is_some_and(|v| v.len() >= SAME_HASH_MAX) {
            return Ok(parsed);
        }
        // The bytes, the parsed entry and its name, the map's slot and list.
        self.reserve(raw.len() + parsed.name.as_ref().map_or(0, |n| n.len()) + 192);
        self.0.by_wire.entry(h).or_default().push((raw.into(), parsed.clone()));
        Ok(parsed)
    }

    /// Counts `bytes` more held, dropping everything first if that would
    /// pass the limit.
    fn reserve(&mut self, bytes: usize) {
        if self.0.bytes + bytes > LABEL_SETS_BYTES_MAX {
            self.0.by_hash.clear();
            self.0.by_wire.clear();
            self.0.bytes = 0;
        }
        self.0.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_seen_again_is_the_same_allocation_and_order_matters() {
        let sets = LabelSets::default();
        let a = sets.lock().intern(&[("host", "a"), ("dc", "x")]);
        let b = sets.lock().intern(&[("host", "a"), ("dc", "x")]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = sets.lock().intern(&[("dc", "x"), ("host", "a")]);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, vec![("dc".to_string(), "x".to_string()), ("host".to_string(), "a".to_string())]);
    }

    #[test]
    fn wire_bytes_seen_again_are_not_parsed_again() {
        let sets = LabelSets::default();
        let mut parses = 0;
        let mut get = |raw: &[u8]| {
            sets.lock()
                .by_wire(raw, |s| {
                    parses += 1;
                    let labels = s.intern(&[("k", std::str::from_utf8(raw).unwrap())]);
                    Ok::<_, ()>(WireLabels { name: None, labels, label_bytes: raw.len() })
                })
                .unwrap()
        };
        let (a, b, c) = (get(b"one"), get(b"one"), get(b"two"));
        assert!(Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &c));
        assert_eq!(c.labels[0].1, "two");
        assert_eq!(parses, 2);
        let failed = sets.lock().by_wire(b"bad", |_| Err("unparsable"));
        assert!(failed.is_err());
        assert!(sets.lock().by_wire(b"bad", |_| Err("parsed again")).is_err_and(|e| e == "parsed again"), "a failure is not kept");
    }

    #[test]
    fn sets_under_one_hash_are_kept_up_to_a_bound() {
        let sets = LabelSets::default();
        let mut lock = sets.lock();
        let made = |i: usize| WireLabels { name: None, labels: Arc::new(vec![("k".into(), i.to_string())]), label_bytes: 1 };
        // Other bytes already filed under the hash of b"y", as crafted collisions would be.
        let h = xxh3_64(b"y");
        lock.0.by_wire.insert(h, (0..SAME_HASH_MAX).map(|i| (format!("other{i}").as_bytes().into(), Arc::new(made(i)))).collect());
        let got = lock.by_wire(b"y", |_| Ok::<_, ()>(made(99))).unwrap();
        assert_eq!(got.labels[0].1, "99", "parsed, and answered");
        assert_eq!(lock.0.by_wire[&h].len(), SAME_HASH_MAX, "but not kept");
        lock.0.by_wire.get_mut(&h).unwrap().pop();
        lock.by_wire(b"y", |_| Ok::<_, ()>(made(99))).unwrap();
        assert!(lock.0.by_wire[&h].iter().any(|(r, _)| **r == *b"y"), "kept below the bound");
    }

    #[test]
    fn the_sets_are_dropped_past_their_byte_limit() {
        let sets = LabelSets::default();
        let big = "v".repeat(1 << 20);
        for i in 0..(LABEL_SETS_BYTES_MAX >> 20) + 4 {
            let v = format!("{i}{big}");
            sets.lock().intern(&[("k", v.as_str())]);
            assert!(sets.state.lock().unwrap().bytes <= LABEL_SETS_BYTES_MAX);
        }
    }
}
