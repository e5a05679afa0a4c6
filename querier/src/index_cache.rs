//! A bounded cache of parsed part footers, so repeated queries skip the
//! footer range read. Parts are immutable, so entries never go stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use canopy_storage::part::PartIndex;

/// Footers by part path, at most `bytes_max` bytes (approximately).
#[derive(Debug)]
pub(crate) struct IndexCache {
    inner: Mutex<Inner>,
    bytes_max: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, (Arc<PartIndex>, u64)>,
    bytes: usize,
    clock: u64,
}

impl IndexCache {
    pub(crate) fn new(bytes_max: usize) -> IndexCache {
        IndexCache { inner: Mutex::new(Inner::default()), bytes_max }
    }

    pub(crate) fn get(&self, path: &str) -> Option<Arc<PartIndex>> {
        let mut g = self.inner.lock().expect("cache lock");
        g.clock += 1;
        let now = g.clock;
        g.map.get_mut(path).map(|(idx, used)| {
            *used = now;
            idx.clone()
        })
    }

    pub(crate) fn insert(&self, path: &str, idx: Arc<PartIndex>) {
        let size = idx.approx_bytes() + path.len();
        if size > self.bytes_max {
            return;
        }
        let mut g = self.inner.lock().expect("cache lock");
        g.clock += 1;
        let now = g.clock;
        if let Some((old, _)) = g.map.insert(path.to_string(), (idx, now)) {
            g.bytes -= old.approx_bytes() + path.len();
        }
        g.bytes += size;
        // Evict least recently used entries, a batch at a time, until under budget.
        while g.bytes > self.bytes_max {
            let mut by_age: Vec<(u64, String)> = g.map.iter().map(|(k, (_, u))| (*u, k.clone())).collect();
            by_age.sort_unstable();
            for (_, k) in by_age.into_iter().take((g.map.len() / 4).max(1)) {
                if let Some((old, _)) = g.map.remove(&k) {
                    g.bytes -= old.approx_bytes() + k.len();
                }
            }
        }
    }
}
