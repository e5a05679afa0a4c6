//! A block decoded into typed columns: the points of one series as
//! vectors (timestamps, versions, one vector per field) and tag runs, in a
//! query's target layout. Queries aggregate straight over these slices;
//! nothing is materialised per point unless raw points are asked for.

use canopy_api::v1::FieldType;
use canopy_model::{FieldVal, Point, TagVal};

/// A tag column as runs of equal values (tags are mostly constant in a block).
#[derive(Debug, Clone, PartialEq)]
pub struct TagColumn {
    /// `(end, value)`: rows `[previous end, end)` hold `value`; ends increase.
    pub runs: Vec<(u32, TagVal)>,
}

impl TagColumn {
    /// A column of `n` copies of `v`.
    pub fn constant(v: TagVal, n: usize) -> TagColumn {
        TagColumn { runs: vec![(n as u32, v)] }
    }

    /// Runs from per-row values.
    pub fn from_values<'a>(vals: impl Iterator<Item = &'a TagVal>) -> TagColumn {
        let mut runs: Vec<(u32, TagVal)> = Vec::new();
        for (i, v) in vals.enumerate() {
            match runs.last_mut() {
                Some((end, last)) if last == v => *end = i as u32 + 1,
                _ => runs.push((i as u32 + 1, v.clone())),
            }
        }
        TagColumn { runs }
    }

    /// The value when every row holds the same one.
    pub fn single(&self) -> Option<&TagVal> {
        match self.runs.as_slice() {
            [(_, v)] => Some(v),
            _ => None,
        }
    }

    /// The value at row `i`.
    pub fn get(&self, i: usize) -> &TagVal {
        let r = self.runs.partition_point(|(end, _)| *end as usize <= i);
        &self.runs[r.min(self.runs.len() - 1)].1
    }

    /// Keeps rows `[lo, hi)`.
    pub(crate) fn slice(&mut self, lo: usize, hi: usize) {
        if lo == 0 && self.runs.last().is_some_and(|(end, _)| *end as usize == hi) {
            return;
        }
        let mut out = Vec::new();
        let mut start = 0usize;
        for (end, v) in self.runs.drain(..) {
            let (a, b) = (start.max(lo), (end as usize).min(hi));
            if a < b {
                out.push(((b - lo) as u32, v));
            }
            start = end as usize;
        }
        self.runs = out;
    }
}

/// A field column, typed so aggregation runs over plain slices.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldColumn {
    /// Every row null (or the column is not stored, or not read).
    Null,
    /// Floats; `present` is `None` when no row is null (null rows hold 0).
    Float { vals: Vec<f64>, present: Option<Vec<bool>> },
    /// Integers, likewise.
    Int { vals: Vec<i64>, present: Option<Vec<bool>> },
    /// Anything else, row by row.
    Values(Vec<FieldVal>),
}

impl FieldColumn {
    /// Builds the tightest column for per-row values.
    pub fn from_values(vals: Vec<FieldVal>) -> FieldColumn {
        let present: Vec<bool> = vals.iter().map(|v| !matches!(v, FieldVal::Null)).collect();
        if !present.iter().any(|&p| p) {
            return FieldColumn::Null;
        }
        let mask = (!present.iter().all(|&p| p)).then_some(present);
        if vals.iter().all(|v| matches!(v, FieldVal::Float(_) | FieldVal::Null)) {
            let vals = vals.iter().map(|v| if let FieldVal::Float(f) = v { *f } else { 0.0 }).collect();
            return FieldColumn::Float { vals, present: mask };
        }
        if vals.iter().all(|v| matches!(v, FieldVal::Int(_) | FieldVal::Null)) {
            let vals = vals.iter().map(|v| if let FieldVal::Int(i) = v { *i } else { 0 }).collect();
            return FieldColumn::Int { vals, present: mask };
        }
        FieldColumn::Values(vals)
    }

    /// An empty column to append values of a field of type `ty` to (the
    /// memtable's): typed, so a number costs 8 bytes.
    pub fn for_type(ty: FieldType) -> FieldColumn {
        match ty {
            FieldType::Float => FieldColumn::Float { vals: Vec::new(), present: None },
            FieldType::Int => FieldColumn::Int { vals: Vec::new(), present: None },
            _ => FieldColumn::Values(Vec::new()),
        }
    }

    /// Appends `v` as the next row of a column made by [`FieldColumn::for_type`].
    /// Points are validated against their schema, so a value of another
    /// type does not arrive; if one did, the column turns into `Values`
    /// rather than lose it.
    ///
    /// # Panics
    /// On [`FieldColumn::Null`], which has no length to append to (never
    /// made by `for_type`; decoded blocks are not appended to).
    pub fn push(&mut self, v: FieldVal) {
        fn mark(present: &mut Option<Vec<bool>>, rows: usize, here: bool) {
            match present {
                Some(p) => p.push(here),
                None if !here => *present = Some((0..=rows).map(|r| r < rows).collect()),
                None => {}
            }
        }
        match (&mut *self, v) {
            (FieldColumn::Float { vals, present }, FieldVal::Null) => {
                mark(present, vals.len(), false);
                vals.push(0.0);
            }
            (FieldColumn::Int { vals, present }, FieldVal::Null) => {
                mark(present, vals.len(), false);
                vals.push(0);
            }
            (FieldColumn::Float { vals, present }, FieldVal::Float(f)) => {
                mark(present, vals.len(), true);
                vals.push(f);
            }
            (FieldColumn::Int { vals, present }, FieldVal::Int(n)) => {
                mark(present, vals.len(), true);
                vals.push(n);
            }
            (FieldColumn::Values(vals), v) => vals.push(v),
            (FieldColumn::Null, _) => unreachable!("an all-null column has no length to append to"),
            (_, v) => {
                let rows = match self {
                    FieldColumn::Float { vals, .. } => vals.len(),
                    FieldColumn::Int { vals, .. } => vals.len(),
                    _ => 0,
                };
                let mut vals: Vec<FieldVal> = (0..rows).map(|i| self.get(i)).collect();
                vals.push(v);
                *self = FieldColumn::Values(vals);
            }
        }
    }

    /// Appends row `row` of `src` (a column of the same field): numbers
    /// are copied from slice to slice while neither column has a null.
    pub fn push_row_of(&mut self, src: &FieldColumn, row: usize) {
        match (&mut *self, src) {
            (FieldColumn::Float { vals, present: None }, FieldColumn::Float { vals: from, present: None }) => vals.push(from[row]),
            (FieldColumn::Int { vals, present: None }, FieldColumn::Int { vals: from, present: None }) => vals.push(from[row]),
            _ => self.push(src.get(row)),
        }
    }

    /// Empties the column, keeping its type and its slots' capacity (a
    /// writer reuses one column per field from block to block).
    pub fn clear(&mut self) {
        match self {
            FieldColumn::Null => {}
            FieldColumn::Float { vals, present } => {
                vals.clear();
                *present = None;
            }
            FieldColumn::Int { vals, present } => {
                vals.clear();
                *present = None;
            }
            FieldColumn::Values(v) => v.clear(),
        }
    }

    /// Heap bytes of the column's slots (capacities: what the allocator
    /// holds); a string's or binary's own allocation is not included.
    pub fn slot_bytes(&self) -> usize {
        let present = |p: &Option<Vec<bool>>| p.as_ref().map_or(0, Vec::capacity);
        match self {
            FieldColumn::Null => 0,
            FieldColumn::Float { vals, present: p } => vals.capacity() * 8 + present(p),
            FieldColumn::Int { vals, present: p } => vals.capacity() * 8 + present(p),
            FieldColumn::Values(v) => v.capacity() * size_of::<FieldVal>(),
        }
    }

    /// The value at row `i`.
    pub fn get(&self, i: usize) -> FieldVal {
        let here = |p: &Option<Vec<bool>>| p.as_ref().is_none_or(|p| p[i]);
        match self {
            FieldColumn::Null => FieldVal::Null,
            FieldColumn::Float { vals, present } if here(present) => FieldVal::Float(vals[i]),
            FieldColumn::Int { vals, present } if here(present) => FieldVal::Int(vals[i]),
            FieldColumn::Values(v) => v[i].clone(),
            _ => FieldVal::Null,
        }
    }
}

/// The points of one series of one source, sorted by timestamp without
/// repeats, in a target layout (unread columns are null).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBlock {
    pub series: u64,
    pub ts: Vec<i64>,
    /// Empty when the scan did not decode them (see `Scan::versions`).
    pub versions: Vec<i64>,
    pub tags: Vec<TagColumn>,
    pub fields: Vec<FieldColumn>,
}

impl DecodedBlock {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True if the block holds no point.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Builds a block from points of one series sorted by unique timestamps.
    pub fn from_points(points: &[Point]) -> DecodedBlock {
        let (tags, fields) = points.first().map_or((0, 0), |p| (p.tags.len(), p.fields.len()));
        DecodedBlock {
            series: points.first().map_or(0, |p| p.series),
            ts: points.iter().map(|p| p.ts).collect(),
            versions: points.iter().map(|p| p.version).collect(),
            tags: (0..tags).map(|t| TagColumn::from_values(points.iter().map(|p| &p.tags[t]))).collect(),
            fields: (0..fields).map(|f| FieldColumn::from_values(points.iter().map(|p| p.fields[f].clone()).collect())).collect(),
        }
    }

    /// Row `i` as a point.
    pub fn point(&self, i: usize) -> Point {
        Point {
            series: self.series,
            shard: 0,
            ts: self.ts[i],
            version: self.versions.get(i).copied().unwrap_or_default(),
            tags: self.tags.iter().map(|t| t.get(i).clone()).collect(),
            fields: self.fields.iter().map(|f| f.get(i)).collect(),
        }
    }

    /// The rows picked by `(block, row)` from several blocks of one series,
    /// in that order, as one block.
    pub fn gather(blocks: &[DecodedBlock], picks: &[(usize, usize)]) -> DecodedBlock {
        let tags = blocks[0].tags.len();
        let fields = blocks[0].fields.len();
        DecodedBlock {
            series: blocks[0].series,
            ts: picks.iter().map(|&(b, r)| blocks[b].ts[r]).collect(),
            versions: picks.iter().map(|&(b, r)| blocks[b].versions[r]).collect(),
            tags: (0..tags).map(|t| TagColumn::from_values(picks.iter().map(|&(b, r)| blocks[b].tags[t].get(r)))).collect(),
            fields: (0..fields)
                .map(|f| FieldColumn::from_values(picks.iter().map(|&(b, r)| blocks[b].fields[f].get(r)).collect()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(ts: i64, host: &str, v: FieldVal) -> Point {
        Point { series: 7, shard: 0, ts, version: ts * 2, tags: vec![TagVal::Str(host.into())].into(), fields: vec![v].into() }
    }

    #[test]
    fn points_round_trip_through_columns_and_slices() {
        let pts = vec![
            pt(1, "a", FieldVal::Float(0.5)),
            pt(2, "a", FieldVal::Null),
            pt(3, "b", FieldVal::Float(-1.0)),
            pt(4, "b", FieldVal::Float(2.0)),
        ];
        let b = DecodedBlock::from_points(&pts);
        assert!(matches!(&b.fields[0], FieldColumn::Float { present: Some(_), .. }));
        assert_eq!(b.tags[0].runs.len(), 2);
        assert_eq!((0..4).map(|i| b.point(i)).collect::<Vec<_>>(), pts);
        let s = DecodedBlock::from_points(&pts[1..3]);
        assert_eq!((0..2).map(|i| s.point(i)).collect::<Vec<_>>(), pts[1..3].to_vec());
        let g = DecodedBlock::gather(&[b.clone(), s], &[(0, 0), (1, 1), (0, 3)]);
        assert_eq!((0..3).map(|i| g.point(i)).collect::<Vec<_>>(), vec![pts[0].clone(), pts[2].clone(), pts[3].clone()]);
        let ints = FieldColumn::from_values(vec![FieldVal::Int(1), FieldVal::Int(2)]);
        assert_eq!(ints, FieldColumn::Int { vals: vec![1, 2], present: None });
        let mixed = FieldColumn::from_values(vec![FieldVal::Int(1), FieldVal::Str("x".into())]);
        assert!(matches!(mixed, FieldColumn::Values(_)));
    }

    fn pushed(ty: FieldType, vals: &[FieldVal]) -> FieldColumn {
        let mut c = FieldColumn::for_type(ty);
        for v in vals {
            c.push(v.clone());
        }
        assert_eq!((0..vals.len()).map(|i| c.get(i)).collect::<Vec<_>>(), vals, "{ty:?}");
        c
    }

    #[test]
    fn appended_columns_read_back_values_and_nulls() {
        let floats: Vec<FieldVal> = (0..200).map(|i| if i % 7 == 3 { FieldVal::Null } else { FieldVal::Float(i as f64 / 2.0) }).collect();
        assert!(matches!(pushed(FieldType::Float, &floats), FieldColumn::Float { present: Some(_), .. }));
        let ints: Vec<FieldVal> = (0..70).map(FieldVal::Int).chain([FieldVal::Null, FieldVal::Int(3)]).collect();
        assert!(matches!(pushed(FieldType::Int, &ints), FieldColumn::Int { .. }));
        assert_eq!(pushed(FieldType::Int, &[FieldVal::Int(1)]), FieldColumn::Int { vals: vec![1], present: None });
        // A value of another type: the column keeps every value as it came.
        let odd = [FieldVal::Int(5), FieldVal::Null, FieldVal::Str("x".into()), FieldVal::Int(6)];
        assert!(matches!(pushed(FieldType::Int, &odd), FieldColumn::Values(_)));
        pushed(FieldType::String, &[FieldVal::Str("a".into()), FieldVal::Null]);
    }
}
