//! Label sets as agents send them, interned: a decoder that borrows labels
//! from the request body asks here for the shared [`Labels`] of a set, and
//! gets the one allocated when the set was first seen — the same allocation
//! across requests and across metrics with the same labels, which
//! [`super::known_series`] then finds by address.
//!
//! Bounded (invariant 6): past [`LABEL_SETS_BYTES_MAX`] the sets are dropped
//! and re-interned as they come.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, Mutex, MutexGuard};

use xxhash_rust::xxh3::Xxh3;

use super::autoschema::Labels;

/// Most bytes the interned label sets may hold.
pub(crate) const LABEL_SETS_BYTES_MAX: usize = 64 << 20;

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
    by_hash: HashMap<u64, Vec<Labels>>,
    bytes: usize,
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
        let bytes = labels.clone().map(|(k, v)| k.len() + v.len() + 64).sum::<usize>() + 64;
        if self.0.bytes + bytes > LABEL_SETS_BYTES_MAX {
            self.0.by_hash.clear();
            self.0.bytes = 0;
        }
        self.0.bytes += bytes;
        let set: Labels = Arc::new(labels.map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self.0.by_hash.entry(h).or_default().push(set.clone());
        set
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
