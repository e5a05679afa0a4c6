//! Streaming k-way merge of parts. Each input is read one record batch at a
//! time and the output is uploaded in chunks, so memory stays bounded by
//! (inputs x one batch) + one upload chunk, whatever the segment's size.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use canopy_model::{ColumnLayout, Point};
use canopy_storage::PartMeta;
use canopy_storage::part::{DecodedBlock, PartIndex, PartSummary, PartWriter, fetch_batches, measure_blocks, read_index};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::Result;

/// One input part, positioned at a block.
struct Cursor<'a> {
    meta: &'a PartMeta,
    index: PartIndex,
    /// Commit-order rank among the inputs: higher wins ties.
    rank: usize,
    /// The batches of the measure being merged not yet read.
    batches: VecDeque<usize>,
    blocks: VecDeque<DecodedBlock>,
    /// The last batch fetched: small measures share one, and each of them
    /// is merged in turn.
    fetched: Option<(usize, RecordBatch)>,
}

impl Cursor<'_> {
    /// Positions the cursor at the start of `measure`.
    fn start(&mut self, measure: &str) {
        self.batches = self.index.batches_of(measure).into();
        self.blocks.clear();
    }

    /// The series id of the next block, loading the next batch if needed.
    async fn front(&mut self, store: &dyn ObjectStore, measure: &str, target: &ColumnLayout) -> Result<Option<u64>> {
        while self.blocks.is_empty() {
            let Some(b) = self.batches.pop_front() else { return Ok(None) };
            if self.fetched.as_ref().is_none_or(|(i, _)| *i != b) {
                let batch = fetch_batches(store, self.meta, &self.index, &[b], None).await?.pop().expect("one batch asked for");
                self.fetched = Some((b, batch));
            }
            let (_, batch) = self.fetched.as_ref().expect("just fetched");
            self.blocks = measure_blocks(&self.meta.path, &self.index, batch, measure, target)?.into();
        }
        Ok(self.blocks.front().map(|b| b.series))
    }
}

/// Where output bytes go: kept in memory while small, then a multipart upload.
enum Upload {
    Buffer(Vec<u8>),
    Multipart(WriteMultipart),
}

impl Upload {
    async fn push(&mut self, store: &dyn ObjectStore, path: &str, bytes: Vec<u8>, chunk_bytes: usize) -> Result<()> {
        match self {
            Upload::Buffer(buf) => {
                buf.extend(bytes);
                if buf.len() >= chunk_bytes {
                    let mut mp = WriteMultipart::new_with_chunk_size(store.put_multipart(&path.into()).await?, chunk_bytes);
                    mp.write(buf);
                    *self = Upload::Multipart(mp);
                }
            }
            Upload::Multipart(mp) => {
                // At most two chunks in flight: bounded memory, some overlap.
                mp.wait_for_capacity(2).await?;
                mp.write(&bytes);
            }
        }
        Ok(())
    }

    async fn finish(self, store: &dyn ObjectStore, path: &str) -> Result<()> {
        match self {
            Upload::Buffer(buf) => {
                let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
                store.put_opts(&path.into(), PutPayload::from(Bytes::from(buf)), opts).await?;
            }
            Upload::Multipart(mp) => {
                mp.finish().await?;
            }
        }
        Ok(())
    }
}

/// The widest stored layout of a measure among the inputs (layouts only gain
/// columns), later inputs winning ties.
fn target_layout(cursors: &[Cursor<'_>], measure: &str) -> Arc<ColumnLayout> {
    let mut best: Option<&ColumnLayout> = None;
    for c in cursors {
        if let Some((_, l)) = c.index.measures().find(|(m, _)| *m == measure)
            && best.is_none_or(|b| l.tags.len() + l.fields.len() >= b.tags.len() + b.fields.len())
        {
            best = Some(l);
        }
    }
    Arc::new(best.cloned().unwrap_or_default())
}

/// Merges one series' points from several inputs: one point per timestamp,
/// the highest version, then the highest rank (newest part).
fn merge_series(mut ranked: Vec<(usize, Point)>) -> Vec<Point> {
    ranked.sort_by(|(ra, a), (rb, b)| a.ts.cmp(&b.ts).then_with(|| (b.version, *rb).cmp(&(a.version, *ra))));
    ranked.dedup_by(|(_, later), (_, first)| later.ts == first.ts);
    ranked.into_iter().map(|(_, p)| p).collect()
}

/// Merges `inputs` (consecutive parts of one segment, in commit order) into
/// one part written at `out_path`. Returns its statistics.
pub async fn merge_parts(store: &Arc<dyn ObjectStore>, inputs: &[PartMeta], out_path: &str, chunk_bytes: usize) -> Result<PartSummary> {
    let mut cursors = Vec::with_capacity(inputs.len());
    for (rank, meta) in inputs.iter().enumerate() {
        let index = read_index(store.as_ref(), meta).await?;
        cursors.push(Cursor { meta, index, rank, batches: VecDeque::new(), blocks: VecDeque::new(), fetched: None });
    }
    let mut measures: Vec<String> = cursors.iter().flat_map(|c| c.index.measures().map(|(m, _)| m.clone())).collect();
    measures.sort();
    measures.dedup();

    let targets: Vec<Arc<ColumnLayout>> = measures.iter().map(|m| target_layout(&cursors, m)).collect();
    let mut writer = PartWriter::new(targets.iter().map(|t| t.fields.len()).max().unwrap_or(0))?;
    let mut upload = Upload::Buffer(Vec::new());
    for (measure, target) in measures.iter().zip(targets) {
        for c in cursors.iter_mut() {
            c.start(measure);
        }
        loop {
            let mut next: Option<u64> = None;
            for c in cursors.iter_mut() {
                if let Some(s) = c.front(store.as_ref(), measure, &target).await? {
                    next = Some(next.map_or(s, |n| n.min(s)));
                }
            }
            let Some(series) = next else { break };
            let mut ranked = Vec::new();
            for c in cursors.iter_mut() {
                if c.blocks.front().is_some_and(|b| b.series == series) {
                    let block = c.blocks.pop_front().expect("front checked");
                    ranked.extend((0..block.len()).map(|i| (c.rank, block.point(i))));
                }
            }
            writer.add_block(measure, &target, &merge_series(ranked))?;
            let ready = writer.take_bytes();
            if !ready.is_empty() {
                upload.push(store.as_ref(), out_path, ready, chunk_bytes).await?;
            }
        }
    }
    let (tail, summary) = writer.finish()?;
    upload.push(store.as_ref(), out_path, tail, chunk_bytes).await?;
    upload.finish(store.as_ref(), out_path).await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_model::{FieldVal, TagVal};
    use canopy_storage::part::{MeasureRows, Scan, encode_part, scan_part};

    fn layout(fields: &[&str]) -> Arc<ColumnLayout> {
        Arc::new(ColumnLayout { tags: vec![("d".into(), "h".into(), 1)], fields: fields.iter().map(|f| (f.to_string(), 2)).collect() })
    }

    fn pt(series: u64, ts: i64, version: i64, vals: &[i64]) -> Point {
        Point {
            series,
            shard: 0,
            ts,
            version,
            tags: vec![TagVal::Str(format!("h{series}"))].into(),
            fields: vals.iter().map(|&v| FieldVal::Int(v)).collect(),
        }
    }

    async fn put(store: &Arc<dyn ObjectStore>, path: &str, name: &str, layout: Arc<ColumnLayout>, rows: Vec<Point>) -> PartMeta {
        let enc = encode_part(&[MeasureRows { name: name.into(), layout, rows }]).unwrap();
        store.put(&path.into(), enc.bytes.clone().into()).await.unwrap();
        PartMeta::new(0, path.into(), 0, 1 << 40, 0, 0, enc.summary)
    }

    #[tokio::test]
    async fn merge_dedups_by_version_then_newer_part_and_widens_layouts() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let old = layout(&["v"]);
        let new = layout(&["v", "w"]);
        let a = put(&store, "a", "m", old.clone(), vec![pt(1, 10, 0, &[1]), pt(1, 20, 5, &[2]), pt(3, 10, 0, &[3])]).await;
        let b = put(&store, "b", "m", new.clone(), vec![pt(1, 10, 0, &[10, 11]), pt(1, 20, 4, &[20, 21]), pt(2, 5, 0, &[5, 6])]).await;
        let summary = merge_parts(&store, &[a, b], "out", 1 << 20).await.unwrap();
        let meta = PartMeta::new(0, "out".into(), 0, 1 << 40, 0, 1, summary);
        assert_eq!(meta.rows, 4);
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let scan = Scan::everything("m", &new);
        let got: Vec<(u64, i64, Vec<FieldVal>)> =
            scan_part(store.as_ref(), &meta, &idx, &scan).await.unwrap().into_iter().map(|p| (p.series, p.ts, p.fields.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (1, 10, vec![FieldVal::Int(10), FieldVal::Int(11)]), // same version: the newer part wins
                (1, 20, vec![FieldVal::Int(2), FieldVal::Null]),     // higher version from the older part wins
                (2, 5, vec![FieldVal::Int(5), FieldVal::Int(6)]),
                (3, 10, vec![FieldVal::Int(3), FieldVal::Null]),
            ]
        );
    }

    #[tokio::test]
    async fn measures_sharing_batches_merge_each_on_its_own() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let l = layout(&["v"]);
        let put_many = |path: &'static str, measures: Vec<(&'static str, Vec<Point>)>| {
            let store = store.clone();
            let l = l.clone();
            async move {
                let rows: Vec<MeasureRows> =
                    measures.into_iter().map(|(name, rows)| MeasureRows { name: name.into(), layout: l.clone(), rows }).collect();
                let enc = encode_part(&rows).unwrap();
                store.put(&path.into(), enc.bytes.clone().into()).await.unwrap();
                PartMeta::new(0, path.into(), 0, 1 << 40, 0, 0, enc.summary)
            }
        };
        let a = put_many("a", vec![("m1", vec![pt(1, 10, 0, &[1]), pt(2, 10, 0, &[2])]), ("m2", vec![pt(1, 10, 0, &[3])])]).await;
        let b = put_many("b", vec![("m1", vec![pt(1, 10, 0, &[4]), pt(1, 20, 0, &[5])]), ("m3", vec![pt(7, 5, 0, &[6])])]).await;
        for m in [&a, &b] {
            assert_eq!(read_index(store.as_ref(), m).await.unwrap().batches_of("m1"), vec![0], "one shared batch per input");
        }
        let (counted, counters) = canopy_storage::CountingStore::wrap(store.clone());
        let summary = merge_parts(&counted, &[a, b], "out", 1 << 20).await.unwrap();
        assert_eq!(counters.requests("get"), 4, "per input its footer and its one batch, read once for both its measures");
        let meta = PartMeta::new(0, "out".into(), 0, 1 << 40, 0, 1, summary);
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let read = |m: &'static str| {
            let (store, meta, idx, l) = (store.clone(), meta.clone(), idx.clone(), l.clone());
            async move {
                let rows = scan_part(store.as_ref(), &meta, &idx, &Scan::everything(m, &l)).await.unwrap();
                rows.into_iter().map(|p| (p.series, p.ts, p.fields[0].clone())).collect::<Vec<_>>()
            }
        };
        let int = FieldVal::Int;
        assert_eq!(read("m1").await, vec![(1, 10, int(4)), (1, 20, int(5)), (2, 10, int(2))], "the newer part wins a tie");
        assert_eq!(read("m2").await, vec![(1, 10, int(3))]);
        assert_eq!(read("m3").await, vec![(7, 5, int(6))]);
        assert_eq!((idx.batches_of("m1"), idx.batches_of("m3")), (vec![0], vec![0]), "the output shares one batch too");
    }

    #[tokio::test]
    async fn large_outputs_stream_through_a_multipart_upload() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let l = layout(&["v"]);
        let mut inputs = Vec::new();
        for k in 0..3 {
            let rows: Vec<Point> = (0..2000u64).flat_map(|s| (0..20).map(move |t| pt(s, t * 10 + k, 0, &[(s as i64) * t + k]))).collect();
            inputs.push(put(&store, &format!("in{k}"), "m", l.clone(), rows).await);
        }
        // A tiny chunk forces the multipart path.
        let summary = merge_parts(&store, &inputs, "out", 64 * 1024).await.unwrap();
        assert_eq!(summary.rows, 3 * 2000 * 20);
        assert_eq!(store.head(&"out".into()).await.unwrap().size, summary.bytes);
        let meta = PartMeta::new(0, "out".into(), 0, 1 << 40, 0, 1, summary);
        let idx = read_index(store.as_ref(), &meta).await.unwrap();
        let scan = Scan::everything("m", &l);
        let rows = scan_part(store.as_ref(), &meta, &idx, &scan).await.unwrap();
        assert!(rows.windows(2).all(|w| (w[0].series, w[0].ts) < (w[1].series, w[1].ts)));
    }
}
