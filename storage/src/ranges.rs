//! Range reads as object stores bill them: ranges of one object closer than
//! [`COALESCE_GAP`] are fetched in one request, the requests run at once,
//! and each asked range is cut back out of what came back.

use std::ops::Range;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Ranges closer than this are fetched as one: a request costs more than
/// this many bytes of transfer.
pub const COALESCE_GAP: u64 = 32 << 10;

/// Reads `ranges` of `location` (any order, any overlap) with one request
/// per group of nearby ranges, concurrently. Ranges past the object's end
/// are clamped, as a single range read is.
pub async fn get_ranges_coalesced(store: &dyn ObjectStore, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
    let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].start < ranges[i].end).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for &i in &order {
        let r = &ranges[i];
        match merged.last_mut() {
            Some(m) if r.start <= m.end + COALESCE_GAP => m.end = m.end.max(r.end),
            _ => merged.push(r.clone()),
        }
    }
    let datas = futures::future::try_join_all(merged.iter().map(|m| store.get_range(location, m.clone()))).await?;
    Ok(ranges
        .iter()
        .map(|r| {
            if r.start >= r.end {
                return Bytes::new();
            }
            let k = merged.partition_point(|m| m.start <= r.start) - 1;
            let (m, data) = (&merged[k], &datas[k]);
            let lo = ((r.start - m.start) as usize).min(data.len());
            let hi = ((r.end - m.start) as usize).min(data.len());
            data.slice(lo..hi)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn nearby_ranges_share_a_request_and_each_reads_its_bytes() {
        let (store, c) = crate::CountingStore::wrap(Arc::new(object_store::memory::InMemory::new()));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        store.put(&"o".into(), data.clone().into()).await.unwrap();
        let far = 100_000..100_010;
        let ranges = [5_000..6_000, 10..20, far.clone(), 6_500..7_000, 199_990..200_100, 30..30];
        let got = get_ranges_coalesced(store.as_ref(), &"o".into(), &ranges).await.unwrap();
        for (r, g) in ranges.iter().zip(&got) {
            let want = &data[(r.start as usize).min(data.len())..(r.end as usize).min(data.len())];
            assert_eq!(&g[..], want, "{r:?}");
        }
        assert_eq!(c.requests("get"), 3, "three groups of nearby ranges");
    }
}
