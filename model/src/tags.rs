//! One allocation of tag values per series: decoders and memtables hand
//! every point of a series the same [`Tags`], so memory and copies grow with
//! series, not points.

use std::sync::Arc;

use crate::series::{SeriesId, SeriesMap};
use crate::value::TagVal;

/// A series' tag values in a layout, shared by its points.
pub type Tags = Arc<[TagVal]>;

/// The newest tag values seen per series. Only entity tags make the series
/// id, so other tags may change between points: a value that differs from
/// the kept one replaces it rather than being merged into it.
#[derive(Debug, Default, Clone)]
pub struct TagsInterner {
    by_series: SeriesMap<Tags>,
}

impl TagsInterner {
    /// The shared tags equal to `tags` for `series`, and whether they are new
    /// (nothing equal was kept, so the caller now holds a new allocation).
    pub fn intern(&mut self, series: SeriesId, tags: Tags) -> (Tags, bool) {
        match self.by_series.get(&series) {
            // The kept allocation itself: handed back without touching its
            // count (writers on other cores share it).
            Some(kept) if Arc::ptr_eq(kept, &tags) => (tags, false),
            Some(kept) if **kept == *tags => (kept.clone(), false),
            _ => {
                self.by_series.insert(series, tags.clone());
                (tags, true)
            }
        }
    }

    /// The shared tags for `series` equal to `values`, allocating only when
    /// none are kept yet (a decoder's path: most points repeat their series).
    pub fn intern_values(&mut self, series: SeriesId, values: Vec<TagVal>) -> Tags {
        match self.by_series.get(&series) {
            Some(kept) if **kept == *values => kept.clone(),
            _ => {
                let tags: Tags = values.into();
                self.by_series.insert(series, tags.clone());
                tags
            }
        }
    }

    /// Series kept.
    pub fn len(&self) -> usize {
        self.by_series.len()
    }

    /// True when no series is kept.
    pub fn is_empty(&self) -> bool {
        self.by_series.is_empty()
    }

    /// Bytes the interner itself holds per series (the map entry), for budgets.
    pub const ENTRY_BYTES: usize = 48;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &str) -> Tags {
        vec![TagVal::Str(v.into())].into()
    }

    #[test]
    fn equal_tags_of_a_series_share_one_allocation_and_changed_ones_replace_it() {
        let mut i = TagsInterner::default();
        let (a, new_a) = i.intern(1, tags("x"));
        let (b, new_b) = i.intern(1, tags("x"));
        assert!(new_a && !new_b);
        assert!(Arc::ptr_eq(&a, &b));
        let (c, new_c) = i.intern(1, tags("y"));
        assert!(new_c && *c == *tags("y"));
        let d = i.intern_values(1, vec![TagVal::Str("y".into())]);
        assert!(Arc::ptr_eq(&c, &d));
        let e = i.intern_values(2, vec![TagVal::Str("y".into())]);
        assert!(!Arc::ptr_eq(&c, &e), "another series keeps its own");
        assert_eq!(i.len(), 2);
    }
}
