//! Groups and measures stored in a [`MetadataStore`], validated on the way
//! in and compiled (with a cache) for the write and query paths.
//!
//! Keys: `/canopy/groups/{group}` and `/canopy/measures/{group}/{measure}`,
//! values are the protobuf-encoded `Group` / `Measure`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use canopy_api::Timestamp;
use canopy_api::v1::{Group, Measure, Metadata};
use canopy_model::{GroupSpec, MeasureSchema, ModelError, check_group, check_measure, check_measure_update};
use prost::Message;

use crate::kv::{MetadataStore, PutCondition};
use crate::{MetaError, Result};

const GROUPS: &str = "/canopy/groups/";
const MEASURES: &str = "/canopy/measures/";

fn group_key(name: &str) -> String {
    format!("{GROUPS}{name}")
}

fn measure_key(group: &str, name: &str) -> String {
    format!("{MEASURES}{group}/{name}")
}

fn now() -> Timestamp {
    canopy_model::nanos_to_timestamp(canopy_model::now_nanos())
}

fn decode<M: Message + Default>(key: &str, b: &[u8]) -> Result<M> {
    M::decode(b).map_err(|e| MetaError::Storage(format!("{key}: {e}")))
}

/// The schema registry.
#[derive(Debug)]
pub struct SchemaRegistry {
    store: Arc<dyn MetadataStore>,
    /// Compiled measures by (group, name); dropped on every change to them
    /// or their group, so the write path never sees a stale schema here.
    cache: RwLock<HashMap<(String, String), Arc<MeasureSchema>>>,
}

impl SchemaRegistry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn MetadataStore>) -> SchemaRegistry {
        SchemaRegistry { store, cache: RwLock::new(HashMap::new()) }
    }

    /// Drops every compiled schema, so the next use re-reads the store;
    /// cluster nodes call it when their watch sees a schema change made
    /// elsewhere.
    pub fn forget_all(&self) {
        self.cache.write().expect("cache lock").clear();
    }

    /// Drops one measure's cached schema, so the next lookup reads the store
    /// (another process may have changed it).
    pub fn forget_measure(&self, group: &str, name: &str) {
        self.cache.write().expect("cache lock").remove(&(group.to_string(), name.to_string()));
    }

    fn forget_group(&self, group: &str) {
        self.cache.write().expect("cache lock").retain(|(g, _), _| g != group);
    }

    /// Creates a group.
    pub async fn create_group(&self, mut g: Group) -> Result<()> {
        check_group(&g)?;
        g.updated_at = Some(now());
        let key = group_key(&g.metadata.as_ref().expect("checked").name);
        self.store.put(&key, g.encode_to_vec(), PutCondition::Absent).await?;
        Ok(())
    }

    /// Updates a group. The shard count and catalog cannot change: that
    /// would move existing series to other shards.
    pub async fn update_group(&self, mut g: Group) -> Result<()> {
        check_group(&g)?;
        let name = g.metadata.as_ref().expect("checked").name.clone();
        let key = group_key(&name);
        let cur = self.store.get(&key).await?.ok_or_else(|| MetaError::NotFound(format!("group {name:?}")))?;
        let old: Group = decode(&key, &cur.value)?;
        let shards = |g: &Group| g.resource_opts.as_ref().map(|o| o.shard_num);
        if shards(&old) != shards(&g) {
            return Err(ModelError::invalid("group.resource_opts.shard_num", "cannot change after creation").into());
        }
        if old.catalog != g.catalog {
            return Err(ModelError::invalid("group.catalog", "cannot change after creation").into());
        }
        g.updated_at = Some(now());
        self.store.put(&key, g.encode_to_vec(), PutCondition::Revision(cur.mod_revision)).await?;
        self.forget_group(&name);
        Ok(())
    }

    /// Reads a group.
    pub async fn get_group(&self, name: &str) -> Result<Group> {
        let key = group_key(name);
        let kv = self.store.get(&key).await?.ok_or_else(|| MetaError::NotFound(format!("group {name:?}")))?;
        let mut g: Group = decode(&key, &kv.value)?;
        if let Some(md) = g.metadata.as_mut() {
            md.mod_revision = kv.mod_revision;
        }
        Ok(g)
    }

    /// Lists all groups.
    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        self.store.list(GROUPS).await?.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
    }

    /// Deletes a group; it must have no measures left.
    pub async fn delete_group(&self, name: &str) -> Result<bool> {
        if !self.list_measures(name).await?.is_empty() {
            return Err(MetaError::FailedPrecondition(format!("group {name:?} still has measures; delete them first")));
        }
        self.forget_group(name);
        self.store.delete(&group_key(name)).await
    }

    /// Creates a measure in an existing group; returns its revision.
    pub async fn create_measure(&self, mut m: Measure) -> Result<i64> {
        check_measure(&m)?;
        let md = m.metadata.clone().expect("checked");
        self.get_group(&md.group).await?;
        m.updated_at = Some(now());
        let rev = self.store.put(&measure_key(&md.group, &md.name), m.encode_to_vec(), PutCondition::Absent).await?;
        self.cache.write().expect("cache lock").remove(&(md.group, md.name));
        Ok(rev)
    }

    /// Updates a measure; only additions of tags and fields are allowed.
    pub async fn update_measure(&self, m: Measure) -> Result<i64> {
        self.update_measure_at(m, None).await
    }

    /// Updates a measure only if it is still at `read_revision` (the
    /// `mod_revision` it was read at); otherwise fails with `Conflict`, so a
    /// read-modify-write never overwrites a concurrent change.
    pub async fn extend_measure(&self, m: Measure, read_revision: i64) -> Result<i64> {
        self.update_measure_at(m, Some(read_revision)).await
    }

    async fn update_measure_at(&self, mut m: Measure, read_revision: Option<i64>) -> Result<i64> {
        check_measure(&m)?;
        let md = m.metadata.clone().expect("checked");
        let key = measure_key(&md.group, &md.name);
        let cur = self.store.get(&key).await?.ok_or_else(|| MetaError::NotFound(format!("measure {}/{}", md.group, md.name)))?;
        if read_revision.is_some_and(|r| r != cur.mod_revision) {
            return Err(MetaError::Conflict(key));
        }
        let old: Measure = decode(&key, &cur.value)?;
        check_measure_update(&old, &m)?;
        m.updated_at = Some(now());
        let rev = self.store.put(&key, m.encode_to_vec(), PutCondition::Revision(cur.mod_revision)).await?;
        self.cache.write().expect("cache lock").remove(&(md.group, md.name));
        Ok(rev)
    }

    /// Reads a measure.
    pub async fn get_measure(&self, group: &str, name: &str) -> Result<Measure> {
        let key = measure_key(group, name);
        let kv = self.store.get(&key).await?.ok_or_else(|| MetaError::NotFound(format!("measure {group}/{name}")))?;
        let mut m: Measure = decode(&key, &kv.value)?;
        m.metadata.get_or_insert_with(Metadata::default).mod_revision = kv.mod_revision;
        Ok(m)
    }

    /// Lists the measures of a group.
    pub async fn list_measures(&self, group: &str) -> Result<Vec<Measure>> {
        let kvs = self.store.list(&format!("{MEASURES}{group}/")).await?;
        kvs.iter()
            .map(|kv| {
                let mut m: Measure = decode(&kv.key, &kv.value)?;
                m.metadata.get_or_insert_with(Metadata::default).mod_revision = kv.mod_revision;
                Ok(m)
            })
            .collect()
    }

    /// Deletes a measure's schema. Its stored data stays until retention
    /// removes it; re-creating the measure makes it readable again.
    pub async fn delete_measure(&self, group: &str, name: &str) -> Result<bool> {
        self.cache.write().expect("cache lock").remove(&(group.to_string(), name.to_string()));
        self.store.delete(&measure_key(group, name)).await
    }

    /// The compiled schema of a measure, cached.
    pub async fn measure_schema(&self, group: &str, name: &str) -> Result<Arc<MeasureSchema>> {
        if let Some(s) = self.cache.read().expect("cache lock").get(&(group.to_string(), name.to_string())) {
            return Ok(s.clone());
        }
        let g = Arc::new(GroupSpec::compile(&self.get_group(group).await?)?);
        let m = self.get_measure(group, name).await?;
        let schema = Arc::new(MeasureSchema::compile(g, &m)?);
        self.cache.write().expect("cache lock").insert((group.to_string(), name.to_string()), schema.clone());
        Ok(schema)
    }

    /// The compiled group, for shard and segment layout.
    pub async fn group_spec(&self, name: &str) -> Result<GroupSpec> {
        Ok(GroupSpec::compile(&self.get_group(name).await?)?)
    }
}
