//! Series an agent sent before: the label set as received → the series as
//! checked and renamed (sanitised names, series key and id) and its tag
//! values for the measure's newest layout. A remote-write request names
//! each series once per sample, so without this every sample would rebuild
//! its series; with it a known series costs a hash and a comparison.
//!
//! Bounded (invariant 6): past [`KNOWN_SERIES_BYTES_MAX`] the cache is
//! emptied and refills with what agents send next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use canopy_model::{ColumnLayout, IdMap, Tags, tags_bytes};

use super::autoschema::Labels;
use super::label_sets::hash;

/// Most bytes the cache's entries may hold (their labels, twice, and key).
pub(crate) const KNOWN_SERIES_BYTES_MAX: usize = 64 << 20;

/// A label set as checked and renamed once for all its samples.
#[derive(Debug)]
pub(crate) struct PreparedLabels {
    /// What the agent sent, to tell hash collisions apart.
    pub(crate) raw: Labels,
    /// Sanitised names, values as sent.
    pub(crate) labels: Vec<(String, String)>,
    /// The series key (the entity tag's value) and its id.
    pub(crate) key: String,
    pub(crate) id: u64,
    /// The tag values in the layout they were built for (the measure's
    /// layout grows when a new label appears; then they are rebuilt). The
    /// layout is held weakly: enough to keep its address from being reused,
    /// without keeping its contents alive.
    tags: Mutex<Option<(Weak<ColumnLayout>, Tags)>>,
    /// The cache's byte count, charged with the tags once they are built.
    charge_to: Option<Arc<AtomicUsize>>,
}

impl PreparedLabels {
    /// A prepared series with no tags built yet.
    pub(crate) fn new(raw: Labels, labels: Vec<(String, String)>, key: String, id: u64) -> PreparedLabels {
        PreparedLabels { raw, labels, key, id, tags: Mutex::new(None), charge_to: None }
    }

    /// The tags for `layout`: the ones built before if the layout is the same
    /// allocation, else `build`'s (kept when they could be built).
    pub(crate) fn tags_for(&self, layout: &Arc<ColumnLayout>, build: impl FnOnce() -> Result<Tags, String>) -> Result<Tags, String> {
        let mut kept = self.tags.lock().expect("series tags lock");
        if let Some((l, t)) = kept.as_ref()
            && std::ptr::eq(l.as_ptr(), Arc::as_ptr(layout))
        {
            return Ok(t.clone());
        }
        let tags = build()?;
        if let Some(bytes) = &self.charge_to {
            bytes.fetch_add(tags_bytes(&tags), Ordering::Relaxed);
            if let Some((_, old)) = kept.as_ref() {
                let old = tags_bytes(old);
                let _ = bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(old)));
            }
        }
        *kept = Some((Arc::downgrade(layout), tags.clone()));
        Ok(tags)
    }

    /// True when tags were built for `layout` (so every label is in it).
    pub(crate) fn has_tags_for(&self, layout: &Arc<ColumnLayout>) -> bool {
        self.tags.lock().expect("series tags lock").as_ref().is_some_and(|(l, _)| std::ptr::eq(l.as_ptr(), Arc::as_ptr(layout)))
    }

    /// Bytes of the entry without its tags (charged when built): its labels
    /// twice (as sent, as renamed), its key, and its two map slots.
    fn bytes(&self) -> usize {
        let labels: usize = self.labels.iter().map(|(k, v)| k.len() + v.len() + 64).sum();
        2 * labels + self.key.len() + 160 + 128
    }
}

/// The cache of every measure's known series.
#[derive(Debug, Default)]
pub(crate) struct KnownSeries {
    state: Mutex<State>,
    /// What the entries hold, their tags included.
    bytes: Arc<AtomicUsize>,
}

/// A measure's known series: by the address of the label set they were
/// prepared from (an interned set, see [`super::label_sets`]; the entry holds
/// it, so the address is not reused while it is here), and by the hash of
/// the labels.
#[derive(Debug, Default)]
struct Known {
    by_address: IdMap<usize, Arc<PreparedLabels>>,
    by_hash: IdMap<u64, Vec<Arc<PreparedLabels>>>,
}

#[derive(Debug, Default)]
struct State {
    /// (group, measure) → its series.
    measures: HashMap<(String, String), Known>,
}

/// The known series of one measure, locked for one request's rows. The
/// measure's entry is taken out of the map while the lock is held and put
/// back when this drops: a request's series are looked up without hashing
/// the measure's name for each.
pub(crate) struct MeasureSeries<'a> {
    state: std::sync::MutexGuard<'a, State>,
    bytes: &'a Arc<AtomicUsize>,
    key: (String, String),
    known: Known,
}

impl KnownSeries {
    /// The known series of `group`/`measure`, held until the guard drops.
    pub(crate) fn measure(&self, group: &str, measure: &str) -> MeasureSeries<'_> {
        let mut state = self.state.lock().expect("known series lock");
        let key = (group.to_string(), measure.to_string());
        let known = state.measures.remove(&key).unwrap_or_default();
        MeasureSeries { state, bytes: &self.bytes, key, known }
    }
}

impl Drop for MeasureSeries<'_> {
    fn drop(&mut self) {
        // Put back only when it holds series: a measure whose every series
        // was refused leaves no entry (none is charged to the byte count).
        if !self.known.by_address.is_empty() {
            self.state.measures.insert(std::mem::take(&mut self.key), std::mem::take(&mut self.known));
        }
    }
}

impl MeasureSeries<'_> {
    /// The prepared series of `raw`: the known one, or `prepare`'s (then
    /// kept). A label set `prepare` refuses is not kept.
    pub(crate) fn get_or_prepare(
        &mut self,
        raw: &Labels,
        prepare: impl FnOnce() -> Result<PreparedLabels, String>,
    ) -> Result<Arc<PreparedLabels>, String> {
        let address = Arc::as_ptr(raw) as usize;
        if let Some(found) = self.known.by_address.get(&address) {
            return Ok(found.clone());
        }
        let h = hash(raw.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(found) = self.known.by_hash.get(&h).and_then(|v| v.iter().find(|p| *p.raw == **raw)) {
            return Ok(found.clone());
        }
        let mut prepared = prepare()?;
        // The entry pins the label set whose address keys it, and charges
        // the cache for its tags once they are built.
        prepared.raw = raw.clone();
        prepared.charge_to = Some(self.bytes.clone());
        let prepared = Arc::new(prepared);
        let bytes = prepared.bytes();
        if self.bytes.load(Ordering::Relaxed) + bytes > KNOWN_SERIES_BYTES_MAX {
            self.state.measures.clear();
            self.known = Known::default();
            self.bytes.store(0, Ordering::Relaxed);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.known.by_address.insert(address, prepared.clone());
        self.known.by_hash.entry(h).or_default().push(prepared.clone());
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_model::TagVal;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Arc::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn prepared(raw: &Labels, id: u64) -> PreparedLabels {
        PreparedLabels::new(raw.clone(), raw.to_vec(), format!("{id}"), id)
    }

    #[test]
    fn a_label_set_sent_again_is_prepared_once_and_other_measures_keep_their_own() {
        let known = KnownSeries::default();
        let a = labels(&[("host", "a")]);
        let mut prepares = 0;
        let first = known
            .measure("g", "cpu")
            .get_or_prepare(&a, || {
                prepares += 1;
                Ok(prepared(&a, 1))
            })
            .unwrap();
        // The same labels in another allocation (the next request).
        let again = known
            .measure("g", "cpu")
            .get_or_prepare(&labels(&[("host", "a")]), || {
                prepares += 1;
                Ok(prepared(&a, 2))
            })
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(prepares, 1);
        let other = known.measure("g", "mem").get_or_prepare(&a, || Ok(prepared(&a, 3))).unwrap();
        assert_eq!(other.id, 3);
        // Refused label sets are not kept.
        let bad = labels(&[("x", "y")]);
        assert!(known.measure("g", "cpu").get_or_prepare(&bad, || Err("no".into())).is_err());
        assert_eq!(known.measure("g", "cpu").get_or_prepare(&bad, || Ok(prepared(&bad, 4))).unwrap().id, 4);
    }

    #[test]
    fn a_measure_whose_series_are_all_refused_leaves_no_entry() {
        let known = KnownSeries::default();
        for i in 0..100 {
            let raw = labels(&[("k", "v")]);
            assert!(known.measure("g", &format!("m{i}")).get_or_prepare(&raw, || Err("refused".into())).is_err());
        }
        assert!(known.state.lock().unwrap().measures.is_empty());
        let raw = labels(&[("k", "v")]);
        known.measure("g", "kept").get_or_prepare(&raw, || Ok(prepared(&raw, 1))).unwrap();
        assert_eq!(known.state.lock().unwrap().measures.len(), 1);
        // Looked up again through the entry put back.
        let again = known.measure("g", "kept").get_or_prepare(&raw, || Err("not prepared again".into())).unwrap();
        assert_eq!(again.id, 1);
    }

    #[test]
    fn tags_are_rebuilt_when_the_layout_changes() {
        let raw = labels(&[("host", "a")]);
        let p = prepared(&raw, 1);
        let l1 = Arc::new(ColumnLayout::default());
        let l2 = Arc::new(ColumnLayout::default());
        let tags = |v: &str| -> Result<Tags, String> { Ok(vec![TagVal::Str(v.into())].into()) };
        let a = p.tags_for(&l1, || tags("one")).unwrap();
        let b = p.tags_for(&l1, || tags("two")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same layout reuses the tags");
        assert_eq!(*p.tags_for(&l2, || tags("three")).unwrap(), *tags("three").unwrap(), "another layout rebuilds them");
    }

    #[test]
    fn built_tags_are_charged_to_the_cache() {
        let known = KnownSeries::default();
        let raw = labels(&[("host", "a")]);
        let p = known.measure("g", "m").get_or_prepare(&raw, || Ok(prepared(&raw, 1))).unwrap();
        let before = known.bytes.load(Ordering::Relaxed);
        let layout = Arc::new(ColumnLayout::default());
        let tags: Tags = vec![TagVal::Str("x".repeat(10_000))].into();
        p.tags_for(&layout, || Ok(tags.clone())).unwrap();
        assert_eq!(known.bytes.load(Ordering::Relaxed), before + tags_bytes(&tags));
        // Rebuilt for another layout: the old tags' charge is returned.
        let other = Arc::new(ColumnLayout::default());
        p.tags_for(&other, || Ok(vec![TagVal::Null].into())).unwrap();
        assert!(known.bytes.load(Ordering::Relaxed) < before + 1_000);
    }

    #[test]
    fn the_cache_empties_itself_past_its_byte_limit() {
        let known = KnownSeries::default();
        let big = "v".repeat(1 << 20);
        for i in 0..(KNOWN_SERIES_BYTES_MAX >> 20) + 8 {
            let raw = labels(&[("k", &format!("{i}{big}"))]);
            known.measure("g", "m").get_or_prepare(&raw, || Ok(prepared(&raw, i as u64))).unwrap();
            assert!(known.bytes.load(Ordering::Relaxed) <= KNOWN_SERIES_BYTES_MAX);
        }
    }
}
