//! One measure's rows of an agent request, with each distinct label set and
//! list of field names held once: a row names them by index. A remote-write
//! request names its series once per sample; counted by index, a sample
//! costs no reference count of its own on the way to a point (each one was
//! an atomic operation on memory that concurrent requests share).

use canopy_model::IdMap;

use super::autoschema::{FieldNames, Labels, RowValues};

/// One point from an agent: its series (an index into
/// [`MeasureRows::series`]), its field names (into [`MeasureRows::names`])
/// and values, position by position, and its time in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentRow {
    pub(crate) series: u32,
    pub(crate) names: u32,
    pub(crate) values: RowValues,
    pub(crate) ts: i64,
}

/// The rows of one measure in a request.
#[derive(Debug, Default)]
pub(crate) struct MeasureRows {
    /// The distinct label sets, in the order first seen.
    pub(crate) series: Vec<Labels>,
    /// The distinct lists of field names, in the order first seen.
    pub(crate) names: Vec<FieldNames>,
    pub(crate) rows: Vec<AgentRow>,
    /// A label set's address → its index. Sets are interned or shared by
    /// a decoder; `series` holds each, so no address is reused meanwhile.
    index: IdMap<usize, u32>,
}

impl MeasureRows {
    /// The index of `labels`, added on first sight.
    pub(crate) fn series_index(&mut self, labels: &Labels) -> u32 {
        let next = self.series.len() as u32;
        let i = *self.index.entry(std::sync::Arc::as_ptr(labels) as usize).or_insert(next);
        if i == next {
            self.series.push(labels.clone());
        }
        i
    }

    /// The index of `names`: the same list as a recent row's (by address),
    /// else added. Only the latest few are compared, so rows that each name
    /// other fields do not cost a scan of every list.
    pub(crate) fn names_index(&mut self, names: &FieldNames) -> u32 {
        let recent = self.names.len().saturating_sub(8);
        match self.names[recent..].iter().rposition(|n| std::sync::Arc::ptr_eq(n, names)) {
            Some(i) => (recent + i) as u32,
            None => {
                self.names.push(names.clone());
                (self.names.len() - 1) as u32
            }
        }
    }

    /// Adds a row of series `labels`.
    pub(crate) fn push(&mut self, labels: &Labels, names: &FieldNames, values: RowValues, ts: i64) {
        let (series, names) = (self.series_index(labels), self.names_index(names));
        self.rows.push(AgentRow { series, names, values, ts });
    }

    /// The labels of `row`.
    #[cfg(test)]
    pub(crate) fn labels_of(&self, row: &AgentRow) -> &Labels {
        &self.series[row.series as usize]
    }

    /// The field names of `row`.
    #[cfg(test)]
    pub(crate) fn names_of(&self, row: &AgentRow) -> &FieldNames {
        &self.names[row.names as usize]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use canopy_model::FieldVal;

    use super::*;

    #[test]
    fn rows_share_their_label_sets_and_names_by_address() {
        let (a, b): (Labels, Labels) = (Arc::new(vec![("k".into(), "a".into())]), Arc::new(vec![("k".into(), "b".into())]));
        // Equal contents, another allocation: another set (interning is the decoder's).
        let a2: Labels = Arc::new((*a).clone());
        let names: FieldNames = Arc::new(["value".to_string()]);
        let mut m = MeasureRows::default();
        for (l, ts) in [(&a, 1), (&b, 2), (&a, 3), (&a2, 4)] {
            m.push(l, &names, smallvec::smallvec![FieldVal::Float(ts as f64)], ts);
        }
        assert_eq!(m.series.len(), 3);
        assert_eq!(m.names.len(), 1);
        assert_eq!(m.rows.iter().map(|r| r.series).collect::<Vec<_>>(), [0, 1, 0, 2]);
        assert!(Arc::ptr_eq(m.labels_of(&m.rows[2]), &a));
        assert_eq!(Arc::strong_count(&a), 2, "one reference for the request, not one per row");
        assert_eq!(**m.names_of(&m.rows[3]), ["value".to_string()]);
    }
}
