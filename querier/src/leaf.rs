//! Leaf execution: one shard's decoded blocks (parts and memtable) reduced
//! to a partial result. Blocks are taken series by series, deduplicated
//! only where their time ranges overlap, filtered into row ranges, then
//! folded into groups or kept as raw points.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use canopy_model::{FieldVal, PartialResult, Point, Predicate, QueryPlan, TagVal};
use canopy_storage::part::DecodedBlock;

use crate::fold::Groups;
use crate::merge::dedup_series;
use crate::{QueryError, Result};

/// Reduces one shard's blocks, each with its source rank (later parts rank
/// higher, the memtable highest), deduplicating series whose sources overlap.
pub(crate) fn execute_leaf(plan: &QueryPlan, mut blocks: Vec<(u64, DecodedBlock)>, cancel: &AtomicBool) -> Result<PartialResult> {
    blocks.sort_by_key(|(rank, b)| (b.series, *rank));
    let mut leaf = Leaf::new(plan, usize::MAX);
    let mut it = blocks.into_iter().peekable();
    while let Some(first) = it.next() {
        if cancel.load(Ordering::Relaxed) {
            return Err(QueryError::Cancelled);
        }
        let series = first.1.series;
        let mut same = vec![first];
        while let Some(next) = it.next_if(|(_, b)| b.series == series) {
            same.push(next);
        }
        for block in dedup_series(same) {
            leaf.add(&block)?;
        }
    }
    Ok(leaf.finish())
}

/// The reduction of one shard, block by block: each block added must share
/// no (series, timestamp) with another (deduplicated, or from sources whose
/// time ranges do not overlap), so blocks can be folded as they are decoded.
pub(crate) struct Leaf<'a> {
    plan: &'a QueryPlan,
    filter: RowFilter<'a>,
    groups: Option<Groups<'a>>,
    raw: Vec<Point>,
    /// Most raw rows held before the query fails RESOURCE_EXHAUSTED.
    raw_max: usize,
}

impl<'a> Leaf<'a> {
    pub(crate) fn new(plan: &'a QueryPlan, raw_max: usize) -> Leaf<'a> {
        Leaf { plan, filter: RowFilter::new(plan), groups: plan.aggregation.as_ref().map(Groups::new), raw: Vec::new(), raw_max }
    }

    /// Filters a block and folds (or keeps) its matching rows.
    pub(crate) fn add(&mut self, block: &DecodedBlock) -> Result<()> {
        let sel = self.filter.select(block);
        match self.groups.as_mut() {
            Some(g) => g.add(block, &sel)?,
            None => {
                self.raw.extend(sel.into_iter().flatten().map(|i| block.point(i)));
                if self.raw.len() > self.raw_max {
                    return Err(canopy_model::ModelError::ResourceExhausted(format!(
                        "the query matches more than {} rows in one shard; narrow the time range or criteria",
                        self.raw_max
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The shard's partial result.
    pub(crate) fn finish(self) -> PartialResult {
        match self.groups {
            Some(g) => PartialResult::Groups(g.finish()),
            None => crate::root::raw_partial(self.plan, self.raw),
        }
    }
}

/// The criteria as row ranges of a deduplicated block.
struct RowFilter<'a> {
    predicate: &'a Predicate,
    tags: Vec<usize>,
    fields: Vec<usize>,
    tag_count: usize,
    field_count: usize,
}

impl<'a> RowFilter<'a> {
    fn new(plan: &'a QueryPlan) -> RowFilter<'a> {
        let (mut tags, mut fields) = (Vec::new(), Vec::new());
        plan.predicate.tags_used(&mut tags);
        plan.predicate.fields_used(&mut fields);
        tags.sort_unstable();
        tags.dedup();
        fields.sort_unstable();
        fields.dedup();
        let layout = &plan.schema.layout;
        RowFilter { predicate: &plan.predicate, tags, fields, tag_count: layout.tags.len(), field_count: layout.fields.len() }
    }

    fn select(&self, b: &DecodedBlock) -> Vec<Range<usize>> {
        let n = b.len();
        if matches!(self.predicate, Predicate::True) {
            return std::iter::once(0..n).collect();
        }
        // A scratch row holding only the columns the criteria read.
        let mut tags = vec![TagVal::Null; self.tag_count];
        let mut fields = vec![FieldVal::Null; self.field_count];
        let mut varying = Vec::new();
        for &t in &self.tags {
            match b.tags[t].single() {
                Some(v) => tags[t] = v.clone(),
                None => varying.push(t),
            }
        }
        if varying.is_empty() && self.fields.is_empty() {
            // Constant over the block: decided once.
            return if self.predicate.eval(&tags, &fields) { std::iter::once(0..n).collect() } else { Vec::new() };
        }
        let mut out: Vec<Range<usize>> = Vec::new();
        for i in 0..n {
            for &t in &varying {
                tags[t] = b.tags[t].get(i).clone();
            }
            for &f in &self.fields {
                fields[f] = b.fields[f].get(i);
            }
            if self.predicate.eval(&tags, &fields) {
                match out.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => out.push(i..i + 1),
                }
            }
        }
        out
    }
}
