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
//! Requests decode concurrently: a request holds the sets for reading while
//! it decodes, and takes them for writing only for a set not seen before
//! (an agent's first request, a new series), so the requests of a steady
//! load never wait on each other here.
//!
//! Bounded (invariant 6): past [`LABEL_SETS_BYTES_MAX`] the sets are dropped
//! and re-interned as they come.

use std::hash::Hasher;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use canopy_model::IdMap;
use smallvec::SmallVec;
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
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    by_hash: IdMap<u64, Vec<Labels>>,
    /// Label fields as sent → what they parsed to.
    /// Inline in the map's slot while a hash has one set (all but crafted
    /// collisions): a lookup goes from the slot straight to the bytes.
    by_wire: IdMap<u64, SmallVec<[WireEntry; 1]>>,
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

/// The sets as one request's decoding sees them: read-locked while it finds
/// sets seen before, write-locked while it adds one.
pub(crate) struct Interning<'a> {
    sets: &'a LabelSets,
    read: Option<RwLockReadGuard<'a, State>>,
}

/// The sets, write-locked to add one: what a parse given to
/// [`Interning::by_wire`] interns its labels through.
pub(crate) struct Adding<'g>(&'g mut State);

impl LabelSets {
    /// The sets for a request's decoding (locked as it goes).
    pub(crate) fn lock(&self) -> Interning<'_> {
        Interning { sets: self, read: None }
    }
}

impl Interning<'_> {
    /// The shared allocation of `labels` (in this order).
    #[cfg(test)]
    pub(crate) fn intern(&mut self, labels: &[(&str, &str)]) -> Labels {
        // A writer waits for every reader: this request's guard goes first.
        self.read = None;
        Adding(&mut self.sets.state.write().expect("label sets lock")).intern(labels)
    }

    /// What the label fields `raw` (a series' as sent) parse to: `parse`
    /// runs the first time these bytes are seen, later the kept answer is
    /// returned. A parse that fails is not kept.
    pub(crate) fn by_wire<E>(
        &mut self,
        raw: &[u8],
        parse: impl FnOnce(&mut Adding<'_>) -> Result<WireLabels, E>,
    ) -> Result<Arc<WireLabels>, E> {
        self.by_wire_with(raw, parse, Arc::clone)
    }

    /// [`Interning::by_wire`], handing the answer to `then` by reference: a
    /// caller that has seen the set already in this request keeps no
    /// reference of its own (a count on memory every request shares).
    pub(crate) fn by_wire_with<E, R>(
        &mut self,
        raw: &[u8],
        parse: impl FnOnce(&mut Adding<'_>) -> Result<WireLabels, E>,
        then: impl FnOnce(&Arc<WireLabels>) -> R,
    ) -> Result<R, E> {
        let h = xxh3_64(raw);
        let read = self.read.get_or_insert_with(|| self.sets.state.read().expect("label sets lock"));
        if let Some(found) = read.wire(h, raw) {
            return Ok(then(found));
        }
        self.read = None;
        let mut state = self.sets.state.write().expect("label sets lock");
        // Another request may have added it between the two locks.
        if let Some(found) = state.wire(h, raw) {
            return Ok(then(found));
        }
        let mut adding = Adding(&mut state);
        let parsed = Arc::new(parse(&mut adding)?);
        if adding.0.by_wire.get(&h).is_some_and(|v| v.len() >= SAME_HASH_MAX) {
            return Ok(then(&parsed));
        }
        // The bytes, the parsed entry and its name, the map's slot and list.
        adding.reserve(raw.len() + parsed.name.as_ref().map_or(0, |n| n.len()) + 192);
        adding.0.by_wire.entry(h).or_default().push((raw.into(), parsed.clone()));
        Ok(then(&parsed))
    }
}

impl State {
    /// What `raw` (whose hash is `h`) parsed to, if kept.
    fn wire(&self, h: u64, raw: &[u8]) -> Option<&Arc<WireLabels>> {
        self.by_wire.get(&h).and_then(|v| v.iter().find(|(r, _)| **r == *raw)).map(|(_, w)| w)
    }
}

impl Adding<'_> {
    /// The shared allocation of `labels` (in this order).
    pub(crate) fn intern(&mut self, labels: &[(&str, &str)]) -> Labels {
        self.intern_iter(labels.iter().copied())
    }

    /// [`Adding::intern`] of pairs from an iterator (walked up to three times).
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
        let made = |i: usize| WireLabels { name: None, labels: Arc::new(vec![("k".into(), i.to_string())]), label_bytes: 1 };
        // Other bytes already filed under the hash of b"y", as crafted collisions would be.
        let h = xxh3_64(b"y");
        let others = (0..SAME_HASH_MAX).map(|i| (format!("other{i}").as_bytes().into(), Arc::new(made(i)))).collect();
        sets.state.write().unwrap().by_wire.insert(h, others);
        let mut lock = sets.lock();
        let got = lock.by_wire(b"y", |_| Ok::<_, ()>(made(99))).unwrap();
        assert_eq!(got.labels[0].1, "99", "parsed, and answered");
        drop(lock);
        assert_eq!(sets.state.read().unwrap().by_wire[&h].len(), SAME_HASH_MAX, "but not kept");
        sets.state.write().unwrap().by_wire.get_mut(&h).unwrap().pop();
        sets.lock().by_wire(b"y", |_| Ok::<_, ()>(made(99))).unwrap();
        assert!(sets.state.read().unwrap().by_wire[&h].iter().any(|(r, _)| **r == *b"y"), "kept below the bound");
    }

    #[test]
    fn requests_find_sets_at_once_and_one_adding_waits_for_the_readers() {
        let sets = LabelSets::default();
        let made = |v: &str| WireLabels { name: None, labels: Arc::new(vec![("k".into(), v.into())]), label_bytes: 1 };
        let mut first = sets.lock();
        first.by_wire(b"a", |_| Ok::<_, ()>(made("a"))).unwrap();
        // Found now, so `first` holds the sets for reading.
        first.by_wire(b"a", |_| Err(())).unwrap();
        let (found, added) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut second = sets.lock();
                found.0.send(second.by_wire(b"a", |_| Err(())).unwrap().labels[0].1.clone()).unwrap();
                added.0.send(second.by_wire(b"b", |_| Ok::<_, ()>(made("b"))).unwrap().labels[0].1.clone()).unwrap();
            });
            // Found while `first` still reads (a mutex would make it wait)...
            let timeout = std::time::Duration::from_secs(10);
            assert_eq!(found.1.recv_timeout(timeout).unwrap(), "a");
            // ... while adding waits for `first` to finish its request.
            assert!(added.1.recv_timeout(std::time::Duration::from_millis(50)).is_err());
            drop(first);
            assert_eq!(added.1.recv_timeout(timeout).unwrap(), "b");
        });
        assert_eq!(sets.lock().by_wire(b"b", |_| Err(())).unwrap().labels[0].1, "b", "kept");
    }

    #[test]
    fn the_sets_are_dropped_past_their_byte_limit() {
        let sets = LabelSets::default();
        let big = "v".repeat(1 << 20);
        for i in 0..(LABEL_SETS_BYTES_MAX >> 20) + 4 {
            let v = format!("{i}{big}");
            sets.lock().intern(&[("k", v.as_str())]);
            assert!(sets.state.read().unwrap().bytes <= LABEL_SETS_BYTES_MAX);
        }
    }
}
