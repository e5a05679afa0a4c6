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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStore, ObjectStoreExt};

    #[tokio::test]
    async fn a_corrupt_version_is_an_error_naming_it_and_is_not_cached() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let catalogs = CatalogStore::new(store.clone());
        let v1 = catalogs.commit(&CatalogState::empty("g", 0), CatalogState::empty("g", 0)).await.unwrap();
        let key = canopy_storage::paths::catalog_version("g", 0, v1.version);
        let good = store.get(&key).await.unwrap().bytes().await.unwrap();
        let mut bad = good.to_vec();
        bad[12] ^= 0xff;
        store.put(&key, bad.into()).await.unwrap();

        let cache = CatalogCache::new(catalogs);
        let err = cache.get("g", 0, v1.version).await.unwrap_err();
        assert!(err.message.contains(key.as_ref()), "{err:?}");
        // Repaired (say, restored from a backup), the version loads: the
        // failure was not remembered.
        store.put(&key, good.into()).await.unwrap();
        assert_eq!(*cache.get("g", 0, v1.version).await.unwrap(), v1);
    }
}
