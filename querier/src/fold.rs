//! Aggregation straight over decoded columns: a block's selected rows are
//! cut into runs of one group (constant group-by tags) and one time bucket,
//! and each run is folded from plain slices into its group's state.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;

use canopy_model::{AggFunction, AggState, Aggregation, FieldVal, GROUPS_MAX, GroupKey, ModelError, TagVal};
use canopy_storage::part::{DecodedBlock, FieldColumn};

use crate::Result;

/// The groups of one shard's aggregation.
pub(crate) struct Groups<'a> {
    agg: &'a Aggregation,
    /// Ids of distinct group-by tag values, by their hash.
    tag_ids: HashMap<u64, Vec<u32>>,
    tag_keys: Vec<Vec<TagVal>>,
    /// (bucket, tag id) → index into `states`.
    slots: HashMap<(i64, u32), usize>,
    keys: Vec<(i64, u32)>,
    states: Vec<Vec<AggState>>,
}

impl<'a> Groups<'a> {
    pub(crate) fn new(agg: &'a Aggregation) -> Groups<'a> {
        Groups { agg, tag_ids: HashMap::new(), tag_keys: Vec::new(), slots: HashMap::new(), keys: Vec::new(), states: Vec::new() }
    }

    /// Folds the rows `sel` of a block (deduplicated, matching the criteria).
    pub(crate) fn add(&mut self, b: &DecodedBlock, sel: &[Range<usize>]) -> Result<()> {
        for r in sel {
            for seg in runs_of_group(b, &self.agg.group_tags, r.clone()) {
                let tags: Vec<&TagVal> = self.agg.group_tags.iter().map(|&t| b.tags[t].get(seg.start)).collect();
                let id = self.tag_id(&tags);
                let w = self.agg.bucket_nanos;
                let mut i = seg.start;
                while i < seg.end {
                    let (bucket, j) = if w > 0 {
                        let bucket = b.ts[i].div_euclid(w) * w;
                        let limit = bucket.saturating_add(w);
                        (bucket, i + b.ts[i..seg.end].partition_point(|&t| t < limit))
                    } else {
                        (0, seg.end)
                    };
                    let slot = self.slot(bucket, id)?;
                    for (state, &f) in self.states[slot].iter_mut().zip(&self.agg.fields) {
                        fold(state, self.agg.function, &b.ts[i..j], &b.fields[f], i..j);
                    }
                    i = j;
                }
            }
        }
        Ok(())
    }

    /// The id of a group's tag values; clones them only for a new group.
    fn tag_id(&mut self, tags: &[&TagVal]) -> u32 {
        let mut h = std::hash::DefaultHasher::new();
        tags.hash(&mut h);
        let ids = self.tag_ids.entry(h.finish()).or_default();
        if let Some(&id) = ids.iter().find(|&&id| self.tag_keys[id as usize].iter().eq(tags.iter().copied())) {
            return id;
        }
        let id = self.tag_keys.len() as u32;
        ids.push(id);
        self.tag_keys.push(tags.iter().map(|t| (*t).clone()).collect());
        id
    }

    fn slot(&mut self, bucket: i64, id: u32) -> Result<usize> {
        if let Some(&s) = self.slots.get(&(bucket, id)) {
            return Ok(s);
        }
        if self.states.len() >= GROUPS_MAX {
            return Err(ModelError::ResourceExhausted(format!("more than {GROUPS_MAX} groups")).into());
        }
        self.slots.insert((bucket, id), self.states.len());
        self.keys.push((bucket, id));
        self.states.push(vec![AggState::default(); self.agg.fields.len()]);
        Ok(self.states.len() - 1)
    }

    /// The groups as a partial result's map.
    pub(crate) fn finish(self) -> HashMap<GroupKey, Vec<AggState>> {
        let tag_keys = self.tag_keys;
        self.keys.into_iter().zip(self.states).map(|((bucket, id), s)| ((bucket, tag_keys[id as usize].clone()), s)).collect()
    }
}

/// Cuts `r` where any group-by tag changes value.
fn runs_of_group(b: &DecodedBlock, group_tags: &[usize], r: Range<usize>) -> Vec<Range<usize>> {
    let mut cuts: Vec<usize> = group_tags
        .iter()
        .flat_map(|&t| b.tags[t].runs.iter().map(|(end, _)| *end as usize))
        .filter(|&e| e > r.start && e < r.end)
        .collect();
    if cuts.is_empty() {
        return vec![r];
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = r.start;
    for c in cuts {
        out.push(start..c);
        start = c;
    }
    out.push(start..r.end);
    out
}

/// Folds rows `rows` of a column (their timestamps `ts`) into `state`.
fn fold(state: &mut AggState, function: AggFunction, ts: &[i64], col: &FieldColumn, rows: Range<usize>) {
    match col {
        FieldColumn::Null => {}
        FieldColumn::Float { vals, present: None } => state.add_floats(function, ts, &vals[rows]),
        FieldColumn::Int { vals, present: None } => state.add_ints(ts, &vals[rows]),
        FieldColumn::Float { vals, present: Some(p) } => {
            for (k, i) in rows.enumerate() {
                if p[i] {
                    state.add(&FieldVal::Float(vals[i]), ts[k]);
                }
            }
        }
        FieldColumn::Int { vals, present: Some(p) } => {
            for (k, i) in rows.enumerate() {
                if p[i] {
                    state.add(&FieldVal::Int(vals[i]), ts[k]);
                }
            }
        }
        FieldColumn::Values(v) => {
            for (k, i) in rows.enumerate() {
                state.add(&v[i], ts[k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One shard alone past the group limit is refused as it folds (before
    /// the root's merge could be), and the groups within it all count.
    #[test]
    fn one_shard_past_the_group_limit_is_resource_exhausted() {
        let agg = Aggregation { function: AggFunction::Count, fields: vec![0], group_tags: vec![], bucket_nanos: 1 };
        let mut g = Groups::new(&agg);
        let id = g.tag_id(&[]);
        for bucket in 0..GROUPS_MAX as i64 {
            g.slot(bucket, id).unwrap();
        }
        assert_eq!(g.slot(7, id).unwrap(), 7, "an existing group is found, not counted again");
        let err = g.slot(GROUPS_MAX as i64, id).unwrap_err().to_string();
        assert!(err.contains(&format!("more than {GROUPS_MAX} groups")), "{err}");
        assert_eq!(g.finish().len(), GROUPS_MAX);
    }
}
