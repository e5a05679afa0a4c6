//! Executing a query over one shard's snapshot.

use std::sync::Arc;

use canopy_model::{ModelError, PartialResult, Point, QueryPlan};
use canopy_storage::part::{BlockFilter, Scan, read_index, scan_part};
use canopy_storage::{CatalogState, PartMeta};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::Result;
use crate::dedup::dedup_rows;
use crate::index_cache::IndexCache;

/// Querier settings.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Budget of the part-footer cache.
    pub index_cache_bytes: usize,
    /// Most rows one shard may gather for a query before it fails with
    /// RESOURCE_EXHAUSTED instead of running out of memory.
    pub rows_max: usize,
    /// Parts read concurrently per shard.
    pub part_concurrency: usize,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig { index_cache_bytes: 64 << 20, rows_max: 5_000_000, part_concurrency: 8 }
    }
}

/// Executes query fragments against object storage.
#[derive(Debug)]
pub struct Querier {
    cfg: QuerierConfig,
    store: Arc<dyn ObjectStore>,
    indexes: IndexCache,
}

/// True if the part may hold rows for the plan: measure present, time
/// ranges overlap, and (when the query pins series) the series filter allows one.
fn overlaps(p: &PartMeta, plan: &QueryPlan) -> bool {
    p.measures.get(&plan.schema.name).is_some_and(|m| {
        let series_ok = match (&plan.series, &m.series_filter) {
            (Some(ids), Some(f)) => ids.iter().any(|&id| f.may_contain(id)),
            _ => true,
        };
        m.max_ts >= plan.begin && m.min_ts < plan.end && series_ok
    })
}

impl Querier {
    /// A querier reading parts from `store`.
    pub fn new(cfg: QuerierConfig, store: Arc<dyn ObjectStore>) -> Querier {
        Querier { indexes: IndexCache::new(cfg.index_cache_bytes), cfg, store }
    }

    /// Reads the matching rows of the parts of a pinned catalog version,
    /// each tagged with its part's position (later parts win ties).
    pub async fn scan_parts(&self, catalog: &CatalogState, plan: &QueryPlan) -> Result<Vec<(u64, Point)>> {
        let futs: Vec<_> = catalog
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| overlaps(p, plan))
            .map(|(rank, meta)| self.scan_one(rank as u64, meta.clone(), plan))
            .collect();
        let results: Vec<Vec<(u64, Point)>> = futures::stream::iter(futs).buffered(self.cfg.part_concurrency).try_collect().await?;
        let total: usize = results.iter().map(Vec::len).sum();
        if total > self.cfg.rows_max {
            return Err(ModelError::ResourceExhausted(format!(
                "the query touches {total} rows in one shard, the limit is {}; narrow the time range or criteria",
                self.cfg.rows_max
            ))
            .into());
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn scan_one(&self, rank: u64, meta: PartMeta, plan: &QueryPlan) -> Result<Vec<(u64, Point)>> {
        let idx = match self.indexes.get(&meta.path) {
            Some(i) => i,
            None => {
                let i = Arc::new(read_index(self.store.as_ref(), &meta).await?);
                self.indexes.insert(&meta.path, i.clone());
                i
            }
        };
        let safe = plan.pushdown_safe();
        let keep = move |p: &Point| !safe || plan.predicate.eval(&p.tags, &p.fields);
        let (tags_needed, fields_needed) = plan.needed_columns();
        // Tag conjuncts that hold for every version of a point alike may skip
        // whole blocks before deduplication.
        let block = plan.block_predicate();
        let tag_filter = |tags: &[canopy_model::TagVal]| block.as_ref().is_none_or(|(p, _)| p.eval(tags, &[]));
        let block_filter: Option<BlockFilter<'_>> = block.as_ref().map(|(_, used)| (used.as_slice(), &tag_filter as _));
        let scan = Scan {
            block_filter,
            needed: Some((&tags_needed, &fields_needed)),
            measure: &plan.schema.name,
            target: &plan.schema.layout,
            begin: plan.begin,
            end: plan.end,
            series: plan.series.as_deref(),
            keep: &keep,
        };
        let rows = scan_part(self.store.as_ref(), &meta, &idx, &scan).await?;
        Ok(rows.into_iter().map(|p| (rank, p)).collect())
    }

    /// Executes a query over one shard: parts of `catalog` plus `mem_rows`
    /// (the ingester's matching points above the catalog's watermark).
    pub async fn execute_shard(&self, plan: &QueryPlan, catalog: &CatalogState, mem_rows: Vec<(u64, Point)>) -> Result<PartialResult> {
        let mut rows = self.scan_parts(catalog, plan).await?;
        // Memtable points are newer than every part: rank them above all.
        let base = catalog.parts.len() as u64;
        rows.extend(mem_rows.into_iter().map(|(seq, p)| (base + seq, p)));
        if rows.len() > self.cfg.rows_max {
            return Err(ModelError::ResourceExhausted(format!("more than {} rows in one shard", self.cfg.rows_max)).into());
        }
        let mut rows = dedup_rows(rows);
        if !plan.pushdown_safe() {
            rows.retain(|p| plan.predicate.eval(&p.tags, &p.fields));
        }
        Ok(plan.reduce(rows)?)
    }
}
