//! Flushing a shard: freeze the active memtable, encode one part per time
//! segment, upload the parts, commit them to the catalog together with the
//! new WAL watermark, then drop the memtable and the WAL segments it covered.
//!
//! Crash at any step is safe: parts uploaded but not committed are orphans
//! no catalog references (invariant 1: WAL replay restores their points);
//! after the commit the WAL records are at or below the watermark and are
//! skipped on replay, so nothing is returned twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use canopy_model::Tags;
use canopy_storage::part::{EncodedPart, FieldColumn, PartWriter, SeriesRows, push_tag_run};
use canopy_storage::{CatalogState, PartMeta, StorageError, paths};
use object_store::{PutMode, PutOptions, PutPayload};

use crate::memtable::{Memtable, series_order};
use crate::shard::Shard;
use crate::{IngestError, Result};

/// Most catalog commit attempts on conflict before giving up for this round.
const COMMIT_ATTEMPTS_MAX: usize = 16;
/// Longest time from the start of a flush's uploads to its commit. Garbage
/// collection leaves unreferenced objects younger than its orphan age (far
/// longer) alone, so a commit within this window never names a deleted part.
pub(crate) const UPLOAD_COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Encodes a frozen memtable into one part per time segment. Its columns
/// are read by reference (queries still share the memtable): each
/// measure's rows grouped by series in ts order ([`series_order`]), handed
/// to the part writer of their segment as one block of columns per series
/// and segment, copied from the chunks' typed columns without a `Point` per
/// row.
fn encode_segments(m: &Memtable, segment_nanos: i64) -> std::result::Result<Vec<(i64, EncodedPart)>, StorageError> {
    let mut tables: Vec<_> = m.measures.iter().collect();
    tables.sort_by_key(|(name, _)| *name);
    let seg_of = |ts: i64| ts.div_euclid(segment_nanos) * segment_nanos;
    // Each segment's part gets as many field columns as its widest measure.
    let mut widest: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, t) in &tables {
        let fields = t.layout().fields.len();
        for c in t.chunks() {
            // The current row's segment as [start, end): a division only
            // when a row falls outside it.
            let mut seg = (0, 0);
            for &ts in c.timestamps() {
                if ts < seg.0 || ts >= seg.1 {
                    let start = seg_of(ts);
                    seg = (start, start.saturating_add(segment_nanos));
                    let w = widest.entry(start).or_default();
                    *w = (*w).max(fields);
                }
            }
        }
    }
    // Per segment: its writer and the bytes it finished so far.
    let mut parts: BTreeMap<i64, (PartWriter, Vec<u8>)> = BTreeMap::new();
    for (name, table) in tables {
        let chunks = table.in_newest_layout();
        let layout = table.layout();
        let versioned = chunks.iter().any(|c| c.has_versions());
        // One block's columns, reused from block to block.
        let mut ts: Vec<i64> = Vec::new();
        let mut versions: Vec<i64> = Vec::new();
        let mut tags: Vec<(u32, &Tags)> = Vec::new();
        let mut fields: Vec<FieldColumn> = (0..layout.fields.len()).map(|f| FieldColumn::for_type(layout.field_type(f))).collect();
        let ts_of = |&(c, row): &(u32, u32)| chunks[c as usize].ts(row as usize);
        for (series, rows) in series_order(&chunks).iter() {
            // Rows are in ts order: a segment's are contiguous, up to the
            // first row at or past the segment's end.
            let mut rest: &[(u32, u32)] = rows;
            while let Some(first) = rest.first() {
                // None: the segment reaches past i64::MAX, so holds every row left.
                let end = seg_of(ts_of(first)).checked_add(segment_nanos);
                let n = end.and_then(|end| rest.iter().position(|r| ts_of(r) >= end)).unwrap_or(rest.len());
                let (seg_rows, tail) = rest.split_at(n);
                rest = tail;
                ts.clear();
                versions.clear();
                tags.clear();
                fields.iter_mut().for_each(FieldColumn::clear);
                for &(c, row) in seg_rows {
                    let (chunk, row) = (&chunks[c as usize], row as usize);
                    ts.push(chunk.ts(row));
                    if versioned {
                        versions.push(chunk.version(row));
                    }
                    push_tag_run(&mut tags, chunk.tag_set(chunk.row_sets()[row]));
                    for (to, from) in fields.iter_mut().zip(chunk.fields()) {
                        to.push_row_of(from, row);
                    }
                }
                let seg = seg_of(ts[0]);
                let (w, bytes) = match parts.entry(seg) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert((PartWriter::new(widest.get(&seg).copied().unwrap_or(0))?, Vec::new()))
                    }
                };
                let block = SeriesRows { series, ts: &ts, versions: &versions, tags: &tags, fields: &fields };
                w.add_series(name, layout, &block)?;
                bytes.extend(w.take_bytes());
            }
        }
    }
    parts
        .into_iter()
        .map(|(seg, (w, mut bytes))| {
            let (tail, summary) = w.finish()?;
            bytes.extend(tail);
            Ok((seg, EncodedPart { bytes: Bytes::from(bytes), summary }))
        })
        .collect()
}

impl Shard {
    /// Flushes everything buffered; returns the number of parts committed.
    pub(crate) async fn flush(&self) -> Result<usize> {
        let _serial = self.flush_lock.lock().await;
        {
            let mut st = self.state.lock().expect("shard lock");
            if !st.active.is_empty() {
                let m = std::mem::take(&mut st.active);
                st.frozen.push(Arc::new(m));
            }
        }
        // Later records go to a new segment so this one can be deleted once
        // covered. On a full volume the new segment may not fit: the flush
        // goes on, and truncation replaces the covered active segment.
        if let Err(e) = self.wal_op(|w| w.rotate()).await {
            tracing::warn!(group = %self.group, shard = self.id, error = %e, "WAL rotation failed; flushing anyway");
        }
        let mut parts = 0;
        loop {
            let (memtable, base, segment_nanos) = {
                let st = self.state.lock().expect("shard lock");
                match st.frozen.first() {
                    Some(m) => (m.clone(), st.catalog.clone(), st.segment_nanos),
                    None => break,
                }
            };
            let uploads_started = std::time::Instant::now();
            let new_parts = self.write_parts(&memtable, &base, segment_nanos).await?;
            if uploads_started.elapsed() > UPLOAD_COMMIT_WINDOW {
                return Err(IngestError::Overloaded(format!(
                    "flush of {}/{} took longer than {UPLOAD_COMMIT_WINDOW:?} to upload; its parts are abandoned and the flush retried",
                    self.group, self.id
                )));
            }
            if self.crash_before_commit {
                return Err(IngestError::Closed);
            }
            let committed = self.commit(base, new_parts.clone(), memtable.max_seq).await?;
            let watermark = committed.watermark(&self.wal_id);
            {
                let mut st = self.state.lock().expect("shard lock");
                st.adopt_catalog(committed, &self.wal_id);
                st.frozen.remove(0);
            }
            self.budget.release_memtable(memtable.bytes);
            self.wal_op(move |w| w.truncate_through(watermark).map(drop)).await?;
            parts += new_parts.len();
            tracing::debug!(group = %self.group, shard = self.id, parts = new_parts.len(), watermark, "flushed");
        }
        // Everything acknowledged is in parts and its WAL records are gone:
        // the next append tries the volume again.
        self.wal_full.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(parts)
    }

    /// Runs a WAL file operation on the blocking pool: it may wait for the
    /// writer's fsync and does directory fsyncs itself.
    async fn wal_op(&self, op: impl FnOnce(&mut crate::wal::Wal) -> std::io::Result<()> + Send + 'static) -> Result<()> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || op(&mut wal.lock().expect("wal lock")))
            .await
            .map_err(|e| IngestError::Wal(std::io::Error::other(e)))??;
        Ok(())
    }

    async fn write_parts(&self, m: &Arc<Memtable>, base: &CatalogState, segment_nanos: i64) -> Result<Vec<PartMeta>> {
        // Encoding copies the points' values into columns before compressing
        // them: about the memtable's size again, until the parts are built.
        let slot = self.encoders.acquire().await.map_err(|_| IngestError::Closed)?;
        let encoding = self.budget.charge_flush(m.bytes);
        let frozen = m.clone();
        let encoded = tokio::task::spawn_blocking(move || encode_segments(&frozen, segment_nanos))
            .await
            .map_err(|e| IngestError::Wal(std::io::Error::other(e)))??;
        drop((slot, encoding));
        // The encoded parts are held until uploaded.
        let _uploading = self.budget.charge_flush(encoded.iter().map(|(_, e)| e.bytes.len()).sum());
        if !self.stall_uploads.is_zero() {
            tokio::time::sleep(self.stall_uploads).await;
        }
        let mut metas = Vec::with_capacity(encoded.len());
        for (id, (seg, enc)) in (base.next_part_id..).zip(encoded) {
            let path = paths::part(&self.group, self.id, seg, id, paths::nonce());
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            self.store
                .put_opts(&path.as_str().into(), PutPayload::from(Bytes::clone(&enc.bytes)), opts)
                .await
                .map_err(StorageError::from)?;
            metas.push(PartMeta::new(id, path, seg, seg.saturating_add(segment_nanos), m.max_seq, 0, enc.summary));
        }
        Ok(metas)
    }

    /// Commits new parts and the watermark, rebasing on a concurrent commit
    /// (e.g. a compactor) and stopping if the shard was taken over.
    pub(crate) async fn commit(&self, mut base: Arc<CatalogState>, new_parts: Vec<PartMeta>, max_seq: u64) -> Result<CatalogState> {
        for _ in 0..COMMIT_ATTEMPTS_MAX {
            let mut next = (*base).clone();
            next.epoch = self.epoch;
            let mark = next.watermarks.entry(self.wal_id.to_string()).or_default();
            *mark = (*mark).max(max_seq);
            next.next_part_id = next.next_part_id.max(new_parts.iter().map(|p| p.id + 1).max().unwrap_or(0));
            next.parts.extend(new_parts.iter().cloned());
            match self.catalogs.commit(&base, next).await {
                Ok(c) => return Ok(c),
                Err(StorageError::CatalogConflict { .. }) => {
                    base = Arc::new(self.catalogs.load_latest(&self.group, self.id).await?);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Overloaded(format!(
            "catalog of {}/{} kept changing during {COMMIT_ATTEMPTS_MAX} commit attempts",
            self.group, self.id
        )))
    }
}
