//! The flattened column layout of a measure: every tag (in family order) and
//! every field, by name and type. Stored data carries the layout it was
//! written with; readers map it by name onto the current schema, so adding
//! tags or fields never misreads old data (new columns read back as null).

use canopy_api::v1::{FieldType, Measure, TagType};
use serde::{Deserialize, Serialize};

/// Columns of a measure as written: tags flattened across families, then fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ColumnLayout {
    /// `(family, tag name, TagType as i32)` in schema order.
    pub tags: Vec<(String, String, i32)>,
    /// `(field name, FieldType as i32)` in schema order.
    pub fields: Vec<(String, i32)>,
}

impl ColumnLayout {
    /// The layout of a measure schema.
    pub fn of(measure: &Measure) -> ColumnLayout {
        let tags =
            measure.tag_families.iter().flat_map(|f| f.tags.iter().map(move |t| (f.name.clone(), t.name.clone(), t.r#type))).collect();
        let fields = measure.fields.iter().map(|f| (f.name.clone(), f.field_type)).collect();
        ColumnLayout { tags, fields }
    }

    /// Index of a tag by name.
    pub fn tag_index(&self, name: &str) -> Option<usize> {
        self.tags.iter().position(|(_, n, _)| n == name)
    }

    /// Index of a field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|(n, _)| n == name)
    }

    /// Type of tag `i`.
    pub fn tag_type(&self, i: usize) -> TagType {
        TagType::try_from(self.tags[i].2).unwrap_or(TagType::Unspecified)
    }

    /// Type of field `i`.
    pub fn field_type(&self, i: usize) -> FieldType {
        FieldType::try_from(self.fields[i].1).unwrap_or(FieldType::Unspecified)
    }
}

/// How to read columns stored under one layout (`from`) as another (`to`):
/// for each target column, the source column index, or `None` (read as null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutMapping {
    /// Source index of each target tag.
    pub tags: Vec<Option<usize>>,
    /// Source index of each target field.
    pub fields: Vec<Option<usize>>,
}

impl LayoutMapping {
    /// Maps by name; a column whose type changed is treated as missing.
    pub fn new(from: &ColumnLayout, to: &ColumnLayout) -> LayoutMapping {
        let tags = to.tags.iter().map(|(_, name, ty)| from.tags.iter().position(|(_, n, t)| n == name && t == ty)).collect();
        let fields = to.fields.iter().map(|(name, ty)| from.fields.iter().position(|(n, t)| n == name && t == ty)).collect();
        LayoutMapping { tags, fields }
    }

    /// Drops the target columns a query does not read, so sources neither
    /// decode nor copy them (they read as null).
    pub fn restrict(&mut self, tags_needed: &[bool], fields_needed: &[bool]) {
        for (slot, &needed) in self.tags.iter_mut().zip(tags_needed) {
            if !needed {
                *slot = None;
            }
        }
        for (slot, &needed) in self.fields.iter_mut().zip(fields_needed) {
            if !needed {
                *slot = None;
            }
        }
    }

    /// The source fields the mapping reads, ascending.
    pub fn source_fields(&self) -> Vec<usize> {
        let mut f: Vec<usize> = self.fields.iter().flatten().copied().collect();
        f.sort_unstable();
        f
    }

    /// True when the mapping is the identity, so rows can be used as they are.
    pub fn is_identity(&self, from: &ColumnLayout) -> bool {
        self.tags.len() == from.tags.len()
            && self.fields.len() == from.fields.len()
            && self.tags.iter().enumerate().all(|(i, s)| *s == Some(i))
            && self.fields.iter().enumerate().all(|(i, s)| *s == Some(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tags: &[&str], fields: &[&str]) -> ColumnLayout {
        ColumnLayout {
            tags: tags.iter().map(|t| ("f".to_string(), t.to_string(), TagType::String as i32)).collect(),
            fields: fields.iter().map(|f| (f.to_string(), FieldType::Int as i32)).collect(),
        }
    }

    #[test]
    fn mapping_by_name_reads_new_columns_as_null() {
        let old = layout(&["host", "dc"], &["v"]);
        let new = layout(&["host", "zone", "dc"], &["w", "v"]);
        let m = LayoutMapping::new(&old, &new);
        assert_eq!(m.tags, vec![Some(0), None, Some(1)]);
        assert_eq!(m.fields, vec![None, Some(0)]);
        assert!(!m.is_identity(&old));
        assert!(LayoutMapping::new(&new, &new).is_identity(&new));
    }
}
