//! Compiled schemas and the rules for creating and evolving them.

use std::collections::HashSet;
use std::sync::Arc;

use canopy_api::v1::{Catalog, FieldType, Group, Measure, TagType};

use crate::layout::ColumnLayout;
use crate::time::interval_nanos;
use crate::{ModelError, Result};

/// Most shards a group may have; bounds per-shard state (WALs, memtables).
pub const SHARD_NUM_MAX: u32 = 1024;

/// A group with its intervals resolved to nanoseconds.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub shard_num: u32,
    pub segment_nanos: i64,
    pub ttl_nanos: i64,
    pub proto: Group,
}

impl GroupSpec {
    /// Compiles a stored group; fails if it is not a valid measure group.
    pub fn compile(group: &Group) -> Result<GroupSpec> {
        check_group(group)?;
        let opts = group.resource_opts.as_ref().expect("checked");
        Ok(GroupSpec {
            name: group.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            shard_num: opts.shard_num,
            segment_nanos: interval_nanos(opts.segment_interval.as_ref(), "segment_interval")?,
            ttl_nanos: interval_nanos(opts.ttl.as_ref(), "ttl")?,
            proto: group.clone(),
        })
    }

    /// Start of the time segment holding `ts`.
    pub fn segment_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.segment_nanos) * self.segment_nanos
    }
}

/// A measure with its layout and entity resolved, plus its group.
#[derive(Debug, Clone)]
pub struct MeasureSchema {
    pub group: Arc<GroupSpec>,
    pub name: String,
    pub revision: i64,
    pub layout: Arc<ColumnLayout>,
    /// Indices (in `layout.tags`) of the tags that form the series key.
    pub entity: Vec<usize>,
    pub proto: Measure,
}

impl MeasureSchema {
    /// Compiles a stored measure against its group.
    pub fn compile(group: Arc<GroupSpec>, measure: &Measure) -> Result<MeasureSchema> {
        check_measure(measure)?;
        let layout = ColumnLayout::of(measure);
        let entity = measure.entity.as_ref().map(|e| e.tag_names.iter().filter_map(|n| layout.tag_index(n)).collect()).unwrap_or_default();
        let md = measure.metadata.as_ref().expect("checked");
        Ok(MeasureSchema {
            group,
            name: md.name.clone(),
            revision: md.mod_revision,
            layout: Arc::new(layout),
            entity,
            proto: measure.clone(),
        })
    }
}

/// The one validator for names that become object keys, etcd keys or
/// directory names (groups, measures, tag families, tags, fields): 1..=255
/// characters of `[A-Za-z0-9_.:-]`, not starting with '.'. A leading dot
/// would allow "." and "..", which object stores percent-encode and file
/// systems resolve to another directory.
pub fn check_name(name: &str, field: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::invalid(field, format!("{name:?} must be 1..255 chars of [A-Za-z0-9_.:-], not starting with '.'")))
    }
}

/// Validates a group definition for creation or update.
pub fn check_group(group: &Group) -> Result<()> {
    let md = group.metadata.as_ref().ok_or_else(|| ModelError::invalid("group.metadata", "required"))?;
    check_name(&md.name, "group.metadata.name")?;
    if Catalog::try_from(group.catalog) != Ok(Catalog::Measure) {
        return Err(ModelError::invalid("group.catalog", "only CATALOG_MEASURE is supported"));
    }
    let opts = group.resource_opts.as_ref().ok_or_else(|| ModelError::invalid("group.resource_opts", "required"))?;
    if opts.shard_num == 0 || opts.shard_num > SHARD_NUM_MAX {
        return Err(ModelError::invalid("group.resource_opts.shard_num", format!("must be in 1..={SHARD_NUM_MAX}")));
    }
    interval_nanos(opts.segment_interval.as_ref(), "group.resource_opts.segment_interval")?;
    interval_nanos(opts.ttl.as_ref(), "group.resource_opts.ttl")?;
    Ok(())
}

/// Validates a measure definition on its own (names, types, entity).
pub fn check_measure(m: &Measure) -> Result<()> {
    let md = m.metadata.as_ref().ok_or_else(|| ModelError::invalid("measure.metadata", "required"))?;
    check_name(&md.group, "measure.metadata.group")?;
    check_name(&md.name, "measure.metadata.name")?;
    let mut families = HashSet::new();
    let mut tags = HashSet::new();
    for (fi, fam) in m.tag_families.iter().enumerate() {
        let path = format!("measure.tag_families[{fi}]");
        check_name(&fam.name, &format!("{path}.name"))?;
        if !families.insert(fam.name.as_str()) {
            return Err(ModelError::invalid(format!("{path}.name"), format!("duplicate tag family {:?}", fam.name)));
        }
        for (ti, tag) in fam.tags.iter().enumerate() {
            let tpath = format!("{path}.tags[{ti}]");
            check_name(&tag.name, &format!("{tpath}.name"))?;
            if !tags.insert(tag.name.as_str()) {
                return Err(ModelError::invalid(format!("{tpath}.name"), format!("duplicate tag {:?}", tag.name)));
            }
            if matches!(TagType::try_from(tag.r#type), Err(_) | Ok(TagType::Unspecified)) {
                return Err(ModelError::invalid(format!("{tpath}.type"), "a TAG_TYPE_* value is required"));
            }
        }
    }
    let mut fields = HashSet::new();
    for (i, f) in m.fields.iter().enumerate() {
        check_name(&f.name, &format!("measure.fields[{i}].name"))?;
        if !fields.insert(f.name.as_str()) {
            return Err(ModelError::invalid(format!("measure.fields[{i}].name"), format!("duplicate field {:?}", f.name)));
        }
        if matches!(FieldType::try_from(f.field_type), Err(_) | Ok(FieldType::Unspecified)) {
            return Err(ModelError::invalid(format!("measure.fields[{i}].field_type"), "a FIELD_TYPE_* value is required"));
        }
    }
    let entity = m.entity.as_ref().map(|e| e.tag_names.as_slice()).unwrap_or_default();
    if entity.is_empty() {
        return Err(ModelError::invalid("measure.entity.tag_names", "at least one entity tag is required"));
    }
    for (i, name) in entity.iter().enumerate() {
        if !tags.contains(name.as_str()) {
            return Err(ModelError::invalid(format!("measure.entity.tag_names[{i}]"), format!("unknown tag {name:?}")));
        }
    }
    Ok(())
}

/// Checks that `new` only adds to `old`: same entity, every old tag and field
/// kept with its type and family. Additions are safe because stored data is
/// read through a [`crate::LayoutMapping`].
pub fn check_measure_update(old: &Measure, new: &Measure) -> Result<()> {
    check_measure(new)?;
    if old.entity != new.entity {
        return Err(ModelError::invalid("measure.entity", "the entity of a measure cannot change"));
    }
    if old.tags_follow_entity != new.tags_follow_entity {
        return Err(ModelError::invalid("measure.tags_follow_entity", "cannot change after creation"));
    }
    let (old_l, new_l) = (ColumnLayout::of(old), ColumnLayout::of(new));
    for (fam, name, ty) in &old_l.tags {
        match new_l.tags.iter().find(|(_, n, _)| n == name) {
            Some((f, _, t)) if f == fam && t == ty => {}
            Some(_) => {
                return Err(ModelError::invalid("measure.tag_families", format!("tag {name:?} cannot change type or family")));
            }
            None => {
                return Err(ModelError::invalid("measure.tag_families", format!("tag {name:?} cannot be removed")));
            }
        }
    }
    for (name, ty) in &old_l.fields {
        match new_l.fields.iter().find(|(n, _)| n == name) {
            Some((_, t)) if t == ty => {}
            Some(_) => {
                return Err(ModelError::invalid("measure.fields", format!("field {name:?} cannot change type")));
            }
            None => {
                return Err(ModelError::invalid("measure.fields", format!("field {name:?} cannot be removed")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_a_path_are_refused() {
        for bad in [".", "..", ".hidden", "", "a/b", "a b", "é", &"x".repeat(256)] {
            let err = check_name(bad, "group.metadata.name").unwrap_err().to_string();
            assert!(err.contains("group.metadata.name"), "{bad:?}: {err}");
        }
        for good in ["a", "a.b", "a..", "node_cpu:rate-5m", "_.", &"x".repeat(255)] {
            check_name(good, "n").unwrap();
        }
    }
}
