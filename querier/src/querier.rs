//! Executing a query over one shard's snapshot: the parts of a pinned
//! catalog version (footers cached, only the needed record batches fetched)
//! plus the ingester's rows above that version's watermark. Fetching is
//! async I/O; decoding and reducing run on the [`CpuPool`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use canopy_model::{LayoutMapping, ModelError, PartialResult, Point, Predicate, QueryPlan, TagVal};
use canopy_storage::part::{
    BlockFilter, DecodedBlock, PartIndex, Scan, decode_blocks, fetch_batches, read_index, scan_mapping, select_batches,
};
use canopy_storage::{CatalogState, PartMeta, TagProbe};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::index_cache::IndexCache;
use crate::leaf::{Leaf, execute_leaf};
use crate::merge::{MEMTABLE_RANK, memtable_blocks};
use crate::pool::CpuPool;
use crate::{QueryError, Result};

/// Querier settings.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Budget of the part-footer cache.
    pub index_cache_bytes: usize,
    /// Most rows one shard may decode for a query before it fails with
    /// RESOURCE_EXHAUSTED instead of running out of memory.
    pub rows_max: usize,
    /// Parts read concurrently per shard. Every part's batches are held
    /// until the shard decodes anyway, so this bounds requests in flight,
    /// not memory: wide, so a cold read on an object store costs the same
    /// two round trips (footer, then columns) for 60 parts as for one.
    pub part_concurrency: usize,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig { index_cache_bytes: 64 << 20, rows_max: 5_000_000, part_concurrency: 64 }
    }
}

/// Executes query fragments against object storage.
#[derive(Debug)]
pub struct Querier {
    cfg: QuerierConfig,
    store: Arc<dyn ObjectStore>,
    indexes: IndexCache,
    pool: CpuPool,
}

/// The record batches of one part a query needs, fetched, not yet decoded.
struct Fetched {
    /// Position in the catalog: later parts win ties between equal versions.
    rank: u64,
    path: String,
    /// The part's format version (how its columns are encoded).
    format: u32,
    mapping: LayoutMapping,
    /// The series to read (from the criteria and the part's series index).
    series: Option<Vec<u64>>,
    /// The measure's time range in the part, per the catalog.
    span: (i64, i64),
    batches: Vec<RecordBatch>,
}

/// What a plan asks of every part of a shard, worked out once per query:
/// the columns it reads, the tag conjuncts that may skip whole blocks before
/// deduplication (every version of a point shares those tags), and the
/// `EQ`/`IN` conditions on such tags that catalog tag filters and series
/// indexes resolve (see [`QueryPlan::index_conditions`]).
pub(crate) struct PartQuery {
    plan: Arc<QueryPlan>,
    tags_needed: Vec<bool>,
    fields_needed: Vec<bool>,
    block: Option<(Predicate, Vec<usize>)>,
    conds: Vec<(usize, Vec<TagVal>)>,
    /// `conds` hashed as catalog filters hold them, once per query.
    probes: Vec<TagProbe>,
}

impl PartQuery {
    pub(crate) fn new(plan: Arc<QueryPlan>) -> PartQuery {
        let (tags_needed, fields_needed) = plan.needed_columns();
        let conds = plan.index_conditions();
        let probes = conds.iter().map(|(t, values)| TagProbe::new(&plan.schema.name, &plan.schema.layout.tags[*t].1, values)).collect();
        PartQuery { block: plan.block_predicate(), conds, probes, tags_needed, fields_needed, plan }
    }

    /// True if the catalog entry says the part may hold rows: measure
    /// present, time ranges overlap, the series filter allows a pinned
    /// series, and every tag filter allows one of the values asked for.
    pub(crate) fn overlaps(&self, p: &PartMeta) -> bool {
        let plan = &self.plan;
        p.measures.get(&plan.schema.name).is_some_and(|m| {
            let series_ok = plan.series.as_ref().is_none_or(|ids| m.may_hold_series(ids));
            let tags_ok = self.probes.iter().all(|probe| m.may_hold(probe));
            m.max_ts >= plan.begin && m.min_ts < plan.end && series_ok && tags_ok
        })
    }

    /// The series of a part to read: those the criteria pin, narrowed by
    /// the part's series index; `None` when neither restricts them.
    fn series_to_read(&self, idx: &PartIndex) -> Option<Vec<u64>> {
        let plan = &self.plan;
        let named: Vec<(&str, &[TagVal])> =
            self.conds.iter().map(|(t, v)| (plan.schema.layout.tags[*t].1.as_str(), v.as_slice())).collect();
        let indexed = if named.is_empty() { None } else { idx.series_matching(&plan.schema.name, &named) };
        match (indexed, &plan.series) {
            (Some(a), Some(b)) => Some(a.into_iter().filter(|id| b.binary_search(id).is_ok()).collect()),
            (Some(a), None) => Some(a),
            (None, b) => b.clone(),
        }
    }

    /// Hands `f` the part [`Scan`] of the plan for `series`.
    fn scan<R>(&self, series: Option<&[u64]>, versions: bool, f: impl FnOnce(&Scan<'_>) -> R) -> R {
        let plan = &self.plan;
        let tag_filter = |tags: &[TagVal]| self.block.as_ref().is_none_or(|(p, _)| p.eval(tags, &[]));
        let block_filter: Option<BlockFilter<'_>> = self.block.as_ref().map(|(_, used)| (used.as_slice(), &tag_filter as _));
        f(&Scan {
            block_filter,
            needed: Some((&self.tags_needed, &self.fields_needed)),
            begin: plan.begin,
            end: plan.end,
            series,
            versions,
            ..Scan::everything(&plan.schema.name, &plan.schema.layout)
        })
    }

    /// Decodes a fetched part's blocks.
    fn decode(&self, f: &Fetched, versions: bool, out: &mut dyn FnMut(DecodedBlock)) -> Result<()> {
        self.scan(f.series.as_deref(), versions, |scan| {
            for batch in &f.batches {
                decode_blocks(&f.path, f.format, batch, &f.mapping, scan, out)?;
            }
            Ok(())
        })
    }

    /// Decodes every fetched part's blocks into `sink` (with the part's
    /// rank), stopping at the first error or when the caller is gone.
    fn decode_all(
        &self,
        fetched: &[Fetched],
        versions: bool,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(u64, DecodedBlock) -> Result<()>,
    ) -> Result<()> {
        for f in fetched {
            let mut failed = None;
            self.decode(f, versions, &mut |b| {
                if failed.is_none()
                    && let Err(e) = sink(f.rank, b)
                {
                    failed = Some(e);
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(QueryError::Cancelled);
            }
        }
        Ok(())
    }
}

impl Querier {
    /// A querier reading parts from `store`, scanning on a pool as wide as the machine.
    pub fn new(cfg: QuerierConfig, store: Arc<dyn ObjectStore>) -> Querier {
        Querier { indexes: IndexCache::new(cfg.index_cache_bytes), cfg, store, pool: CpuPool::per_core() }
    }

    async fn index(&self, meta: &PartMeta) -> Result<Arc<PartIndex>> {
        if let Some(i) = self.indexes.get(&meta.path) {
            return Ok(i);
        }
        let i = Arc::new(read_index(self.store.as_ref(), meta).await?);
        self.indexes.insert(&meta.path, i.clone());
        Ok(i)
    }

    /// Fetches the columns and batches of one part that may hold rows for
    /// the plan: its series index turns tag criteria into series, which
    /// pick the batches; only the fields the query reads are downloaded.
    async fn fetch(&self, rank: u64, meta: &PartMeta, q: &PartQuery) -> Result<Option<Fetched>> {
        let idx = self.index(meta).await?;
        let series = q.series_to_read(&idx);
        if series.as_ref().is_some_and(Vec::is_empty) {
            return Ok(None);
        }
        let Some((mapping, which)) = q.scan(series.as_deref(), true, |scan| Some((scan_mapping(&idx, scan)?, select_batches(&idx, scan))))
        else {
            return Ok(None);
        };
        if which.is_empty() {
            return Ok(None);
        }
        let batches = fetch_batches(self.store.as_ref(), meta, &idx, &which, Some(&mapping.source_fields())).await?;
        let span = meta.measures.get(&q.plan.schema.name).map_or((i64::MIN, i64::MAX), |m| (m.min_ts, m.max_ts));
        Ok(Some(Fetched { rank, path: meta.path.clone(), format: idx.format(), mapping, series, span, batches }))
    }

    async fn fetch_all(&self, catalog: &CatalogState, q: &PartQuery) -> Result<Vec<Fetched>> {
        // A loop, not an iterator chain: closures over borrowed parts trip
        // the higher-ranked lifetime check of `async_trait` callers.
        let mut futs = Vec::new();
        for (rank, meta) in catalog.parts.iter().enumerate() {
            if q.overlaps(meta) {
                futs.push(self.fetch(rank as u64, meta, q));
            }
        }
        let fetched: Vec<Option<Fetched>> = futures::stream::iter(futs).buffered(self.cfg.part_concurrency).try_collect().await?;
        let fetched: Vec<Fetched> = fetched.into_iter().flatten().collect();
        canopy_storage::query_stats::record(canopy_storage::query_stats::QueryCost {
            parts_scanned: fetched.len() as u64,
            parts_skipped: (catalog.parts.len() - fetched.len()) as u64,
            ..Default::default()
        });
        Ok(fetched)
    }

    /// Reads the rows of the parts of a pinned catalog version that pass the
    /// plan's source filter, each with its part's position (later parts win
    /// ties) — not deduplicated. For inspection and tests.
    pub async fn scan_parts(&self, catalog: &CatalogState, plan: &QueryPlan) -> Result<Vec<(u64, Point)>> {
        let q = PartQuery::new(Arc::new(plan.clone()));
        let mut out = Vec::new();
        for f in self.fetch_all(catalog, &q).await? {
            q.decode(&f, true, &mut |b| out.extend((0..b.len()).map(|i| (f.rank, b.point(i))).filter(|(_, p)| plan.source_filter(p))))?;
        }
        Ok(out)
    }

    /// Executes a query over one shard: parts of `catalog` plus `mem_rows`
    /// (the ingester's matching points above the catalog's watermark, with
    /// their WAL sequence numbers).
    pub async fn execute_shard(&self, plan: &QueryPlan, catalog: &CatalogState, mem_rows: Vec<(u64, Point)>) -> Result<PartialResult> {
        let q = PartQuery::new(Arc::new(plan.clone()));
        let fetched = self.fetch_all(catalog, &q).await?;
        let overlap = sources_overlap(&fetched, &mem_rows);
        let versions = plan.aggregation.is_none() || overlap;
        let rows_max = self.cfg.rows_max;
        self.pool
            .run(move |cancel| {
                let plan = &q.plan;
                if !overlap {
                    // No two sources share a (series, timestamp): fold each
                    // block as it is decoded, holding one block at a time.
                    let mut leaf = Leaf::new(plan, rows_max);
                    q.decode_all(&fetched, versions, cancel, &mut |_, b| leaf.add(&b))?;
                    drop(fetched);
                    for b in memtable_blocks(mem_rows) {
                        leaf.add(&b)?;
                    }
                    return Ok(leaf.finish());
                }
                let mut blocks: Vec<(u64, DecodedBlock)> = Vec::new();
                let mut rows = 0usize;
                let memtable = memtable_blocks(mem_rows).into_iter().map(|b| (MEMTABLE_RANK, b));
                let mut hold = |rank: u64, b: DecodedBlock| {
                    rows += b.len();
                    if rows > rows_max {
                        return Err(ModelError::ResourceExhausted(format!(
                            "the query touches more than {rows} rows in one shard, the limit is {rows_max}; narrow the time range or criteria"
                        ))
                        .into());
                    }
                    blocks.push((rank, b));
                    Ok(())
                };
                q.decode_all(&fetched, versions, cancel, &mut hold)?;
                drop(fetched);
                for (rank, b) in memtable {
                    hold(rank, b)?;
                }
                execute_leaf(plan, blocks, cancel)
            })
            .await
    }
}

/// True if two sources' time ranges overlap, so a series may have two
/// versions of one timestamp and blocks need their versions to be merged.
fn sources_overlap(fetched: &[Fetched], mem_rows: &[(u64, Point)]) -> bool {
    let mut spans: Vec<(i64, i64)> = fetched.iter().map(|f| f.span).collect();
    if let (Some(lo), Some(hi)) = (mem_rows.iter().map(|(_, p)| p.ts).min(), mem_rows.iter().map(|(_, p)| p.ts).max()) {
        spans.push((lo, hi));
    }
    spans.sort_unstable();
    spans.windows(2).any(|w| w[1].0 <= w[0].1)
}

#[cfg(test)]
mod tests {
    use canopy_api::v1::{
        BinaryOp, Condition, Criteria, FieldType, QueryRequest, StrArray, TagType, TagValue, TimeRange, criteria, tag_value,
    };
    use canopy_model::{FieldVal, nanos_to_timestamp, series_id, testing};
    use canopy_storage::FILTER_SERIES_MAX;
    use canopy_storage::part::{MeasureRows, encode_part};

    use super::*;

    fn strs(v: &[String]) -> TagValue {
        TagValue { value: Some(tag_value::Value::StrArray(StrArray { value: v.to_vec() })) }
    }

    /// A part of measure `m` (entity `s`, which names its series; `z` one of
    /// `zones` values) with `n` series, and its catalog entry.
    fn part(schema: &canopy_model::MeasureSchema, n: usize, zones: usize) -> (Vec<Point>, PartMeta) {
        let mut rows: Vec<Point> = (0..n)
            .map(|i| {
                let tags = vec![TagVal::Str(format!("h{i}")), TagVal::Str(format!("z{}", i % zones))];
                Point {
                    series: series_id("m", [&tags[0]]),
                    shard: 0,
                    ts: 1_000,
                    version: 0,
                    tags: tags.into(),
                    fields: vec![FieldVal::Int(1)].into(),
                }
            })
            .collect();
        rows.sort_by_key(|p| p.series);
        let enc = encode_part(&[MeasureRows { name: "m".into(), layout: schema.layout.clone(), rows: rows.clone() }]).unwrap();
        (rows, PartMeta::new(1, "p".into(), 0, 1 << 40, 1, 0, enc.summary))
    }

    /// Whether `tag IN values` can skip the part from its catalog entry.
    fn overlaps(schema: &canopy_model::MeasureSchema, meta: &PartMeta, tag: &str, values: &[String]) -> bool {
        let req = QueryRequest {
            groups: vec!["g".into()],
            name: "m".into(),
            time_range: Some(TimeRange { begin: Some(nanos_to_timestamp(0)), end: Some(nanos_to_timestamp(10_000)) }),
            criteria: Some(Criteria {
                exp: Some(criteria::Exp::Condition(Condition {
                    name: tag.into(),
                    op: BinaryOp::In as i32,
                    value: Some(strs(values)),
                    field_value: None,
                })),
            }),
            ..Default::default()
        };
        PartQuery::new(Arc::new(QueryPlan::compile(Arc::new(schema.clone()), &req, 10_000).unwrap())).overlaps(meta)
    }

    #[test]
    fn a_part_the_catalog_rules_out_holds_no_row_the_criteria_match() {
        // Every version of a point has the same `z` (as agent measures'
        // labels): conditions on `z` may prune parts too.
        let mut measure = testing::measure("g", "m", &[("s", TagType::String), ("z", TagType::String)], &[("v", FieldType::Int)], &["s"]);
        measure.tags_follow_entity = true;
        let schema = testing::compile(&testing::group("g", 1, 1, 30), &measure);
        // Few series; more series than a filter holds; a tag with more values than it holds.
        for (n, zones) in [(40, 3), (FILTER_SERIES_MAX + 10, 4), (FILTER_SERIES_MAX + 10, FILTER_SERIES_MAX + 10)] {
            let (rows, meta) = part(&schema, n, zones);
            for (t, tag) in ["s", "z"].iter().enumerate() {
                let prefix = if t == 0 { "h" } else { "z" };
                let (mut absent, mut pruned) = (0, 0);
                // Present and absent values, alone and in lists.
                for k in 0..60 {
                    let values: Vec<String> = match k % 3 {
                        0 => vec![format!("{prefix}{k}")],
                        1 => vec![format!("{prefix}{}", k + 5_000)],
                        _ => vec![format!("{prefix}{}", k + 5_000), format!("{prefix}{}", k / 3)],
                    };
                    let held = rows.iter().any(|p| values.iter().any(|v| p.tags[t] == TagVal::Str(v.clone())));
                    let may = overlaps(&schema, &meta, tag, &values);
                    assert!(may || !held, "{n} series, {zones} zones: {tag} IN {values:?} ruled out a part holding it");
                    absent += usize::from(!held);
                    pruned += usize::from(!may);
                }
                // A tag with more values than a filter holds prunes nothing;
                // a filtered one all but a Bloom filter's few false positives.
                let values = if t == 0 { n } else { zones };
                let want = if values > FILTER_SERIES_MAX { 0..=0 } else { absent.saturating_sub(4)..=absent };
                assert!(absent >= 20 && want.contains(&pruned), "{n} series, {zones} zones, {tag}: {pruned} of {absent} pruned");
            }
        }
    }
}
