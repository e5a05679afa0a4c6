//! One series' rows as columns borrowed from their holder: what a part
//! writer encodes as a block. A memtable hands its typed columns over as
//! they are, without building a [`Point`] (and its field vector) per row.

use canopy_model::{Point, Tags};

use super::block::FieldColumn;

/// The rows of one series, sorted by timestamp without repeats, in one
/// measure's layout.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRows<'a> {
    /// The series id.
    pub series: u64,
    /// Timestamps, increasing.
    pub ts: &'a [i64],
    /// One per row, or empty when every version is 0 (agents never set one).
    pub versions: &'a [i64],
    /// The rows' tag values as runs: `(end, tags)` says rows from the
    /// previous run's end up to `end` hold `tags`; ends increase to the
    /// number of rows. A series' rows mostly share one allocation.
    pub tags: &'a [(u32, &'a Tags)],
    /// One column per field of the layout, each as long as `ts`.
    pub fields: &'a [FieldColumn],
}

impl SeriesRows<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Tag values per stored tag (the first run's width).
    pub(crate) fn tag_count(&self) -> usize {
        self.tags.first().map_or(0, |(_, t)| t.len())
    }
}

/// Appends one row holding `tags` to runs of tag sets (the form of
/// [`SeriesRows::tags`]): the last run grows when it holds the same
/// allocation, else a run starts.
pub fn push_tag_run<'a>(runs: &mut Vec<(u32, &'a Tags)>, tags: &'a Tags) {
    let end = runs.last().map_or(0, |(end, _)| *end) + 1;
    match runs.last_mut() {
        Some((last, t)) if std::sync::Arc::ptr_eq(t, tags) => *last = end,
        _ => runs.push((end, tags)),
    }
}

/// Columns built from points, for callers that hold rows as [`Point`]s (a
/// compaction's merge, tests); [`OwnedSeriesRows::rows`] lends them out.
#[derive(Debug, Default)]
pub(crate) struct OwnedSeriesRows<'p> {
    series: u64,
    ts: Vec<i64>,
    versions: Vec<i64>,
    tags: Vec<(u32, &'p Tags)>,
    fields: Vec<FieldColumn>,
}

impl<'p> OwnedSeriesRows<'p> {
    /// The columns of `points` (one series, sorted by timestamp).
    pub(crate) fn of(points: &'p [Point]) -> OwnedSeriesRows<'p> {
        let Some(first) = points.first() else { return OwnedSeriesRows::default() };
        let mut tags: Vec<(u32, &Tags)> = Vec::new();
        points.iter().for_each(|p| push_tag_run(&mut tags, &p.tags));
        OwnedSeriesRows {
            series: first.series,
            ts: points.iter().map(|p| p.ts).collect(),
            versions: if points.iter().any(|p| p.version != 0) { points.iter().map(|p| p.version).collect() } else { Vec::new() },
            tags,
            fields: (0..first.fields.len())
                .map(|f| FieldColumn::from_values(points.iter().map(|p| p.fields[f].clone()).collect()))
                .collect(),
        }
    }

    /// The borrowed form.
    pub(crate) fn rows(&self) -> SeriesRows<'_> {
        SeriesRows { series: self.series, ts: &self.ts, versions: &self.versions, tags: &self.tags, fields: &self.fields }
    }
}
