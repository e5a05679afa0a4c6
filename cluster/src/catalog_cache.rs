//! Pinned catalog versions by number. Versions are immutable, so entries
//! never go stale; the bound keeps the map small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use canopy_liaison::ApiError;
use canopy_storage::{CatalogState, CatalogStore};

/// Catalog versions kept in memory.
const CATALOGS_CACHED_MAX: usize = 1024;

/// A bounded cache of catalog versions in front of a [`CatalogStore`].
pub struct CatalogCache {
    catalogs: CatalogStore,
    cache: Mutex<HashMap<(String, u32, u64), Arc<CatalogState>>>,
}

impl CatalogCache {
    /// A cache over the catalogs of one object store.
    pub fn new(catalogs: CatalogStore) -> CatalogCache {
        CatalogCache { catalogs, cache: Mutex::new(HashMap::new()) }
    }

    /// Version `version` of a shard's catalog (0: nothing committed yet).
    pub async fn get(&self, group: &str, shard: u32, version: u64) -> Result<Arc<CatalogState>, ApiError> {
        let key = (group.to_string(), shard, version);
        if let Some(c) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(if version == 0 {
            CatalogState::empty(group, shard)
        } else {
            self.catalogs.load_version(group, shard, version).await?
        });
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CATALOGS_CACHED_MAX {
            cache.clear();
        }
        cache.insert(key, c.clone());
        Ok(c)
    }
}
