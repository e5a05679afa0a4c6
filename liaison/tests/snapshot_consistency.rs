//! Invariant 2 under concurrency: while writers stream points, and flushes
//! and compactions commit new catalog versions, every query sees one
//! consistent snapshot —
//! each series holds every point acknowledged before the query started,
//! nothing twice, and nothing that was never written.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use canopy_api::v1::*;

use canopy_model::{nanos_to_timestamp as ts, now_nanos as now};

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_during_writes_and_flushes_see_consistent_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let gw = support::stack(dir.path(), Arc::new(object_store::memory::InMemory::new()), |_| {}).await.gw;
    let data = gw.data.clone();
    support::create_g_m(&gw, 2, false).await;

    let base = now() - 3_600_000_000_000;
    const SERIES: i64 = 4;
    // Per series: number of points acknowledged so far (points are written in ts order, one per ms).
    let acked: Arc<Vec<AtomicI64>> = Arc::new((0..SERIES).map(|_| AtomicI64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..SERIES {
        let (gw, acked, stop) = (gw.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                let batch: Vec<DataPointValue> = (i..i + 50)
                    .map(|k| DataPointValue {
                        timestamp: Some(ts(base + k * 1_000_000)),
                        tag_families: vec![TagFamilyForWrite {
                            tags: vec![TagValue { value: Some(tag_value::Value::Int(Int { value: s })) }],
                        }],
                        fields: vec![FieldValue { value: Some(field_value::Value::Int(Int { value: k })) }],
                        version: 0,
                    })
                    .collect();
                let r = gw
                    .write(WriteRequest {
                        metadata: Some(Metadata { group: "g".into(), name: "m".into(), mod_revision: 0 }),
                        data_points: batch,
                        message_id: 0,
                    })
                    .await;
                assert_eq!(r.status(), Status::Succeed, "{r:?}");
                i += 50;
                acked[s as usize].store(i, Ordering::SeqCst);
            }
        }));
    }
    {
        let (data, stop) = (data.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                data.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    let merges = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        // Compactions commit catalog versions concurrently with the flushes.
        let (gw, stop, merges) = (gw.clone(), stop.clone(), merges.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                merges.fetch_add(gw.compact().await.unwrap().merges, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }
    let mut checked = 0;
    // Check for at least 8 s, and on until compactions have committed
    // beside the flushes and queries (a loaded machine may need longer).
    let (min_end, deadline) = (tokio::time::Instant::now() + Duration::from_secs(8), tokio::time::Instant::now() + Duration::from_secs(90));
    while tokio::time::Instant::now() < min_end || merges.load(Ordering::Relaxed) == 0 || checked <= 10 {
        assert!(tokio::time::Instant::now() < deadline, "after 90 s: {checked} queries, {} merges", merges.load(Ordering::Relaxed));
        let before: Vec<i64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        for s in 0..SERIES {
            let q = QueryRequest {
                groups: vec!["g".into()],
                name: "m".into(),
                time_range: Some(TimeRange { begin: Some(ts(base)), end: Some(ts(now() + 1_000_000_000)) }),
                criteria: Some(Criteria {
                    exp: Some(criteria::Exp::Condition(Condition {
                        name: "s".into(),
                        op: BinaryOp::Eq as i32,
                        value: Some(TagValue { value: Some(tag_value::Value::Int(Int { value: s })) }),
                        field_value: None,
                    })),
                }),
                field_projection: Some(FieldProjection { names: vec!["v".into()] }),
                limit: 100_000,
                ..Default::default()
            };
            let r = gw.query(q).await.unwrap();
            let vals: Vec<i64> = r
                .data_points
                .iter()
                .map(|d| match d.fields[0].value.as_ref().unwrap().value.as_ref().unwrap() {
                    field_value::Value::Int(i) => i.value,
                    v => panic!("{v:?}"),
                })
                .collect();
            let distinct: BTreeSet<i64> = vals.iter().copied().collect();
            assert_eq!(distinct.len(), vals.len(), "a point was returned twice");
            // Every point acknowledged before the query is there, and the
            // result is a prefix (writes are acknowledged in order per series).
            let n = vals.len() as i64;
            assert!(n >= before[s as usize], "series {s}: {n} points, {} were acknowledged before the query", before[s as usize]);
            assert_eq!(distinct.iter().copied().collect::<Vec<_>>(), (0..n).collect::<Vec<_>>(), "series {s} has a gap");
            checked += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(checked > 10, "only {checked} queries ran");
    assert!(merges.load(Ordering::Relaxed) > 0, "no compaction ran during the test");
}
