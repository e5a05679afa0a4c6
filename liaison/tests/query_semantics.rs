//! Query and commit semantics on the in-process data plane, where a test can
//! place points exactly: in memtables, in parts, or split between them.
//!
//! * Deduplication comes before filtering: an older version that matches a
//!   criterion the newest version fails is not returned (tags and fields).
//! * A part holding several measures answers each.
//! * A flush whose commit races a compactor's commit rebases onto it; an
//!   ingester restarted after a compactor commit keeps its watermark.

use std::sync::Arc;

use canopy_api::v1::*;
use canopy_compactor::{Compactor, CompactorConfig, PolicyConfig};
use canopy_ingester::{Ingester, IngesterConfig};
use canopy_liaison::Gateway;
use canopy_model::{GroupSpec, testing};
use canopy_storage::CatalogStore;
use object_store::ObjectStore;

mod support;

use support::HOUR;

use canopy_model::nanos_to_timestamp as ts;

struct Env {
    gw: Gateway,
    ingester: Arc<Ingester>,
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
}

/// Group `g` (one shard) with measure `m`: entity `s` (int), tag `z`
/// (string, free to change between versions), field `v` (int).
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let (gw, ingester) = gateway(&dir, store.clone()).await;
    support::create_g_m(&gw, 1, true).await;
    Env { gw, ingester, store, dir }
}

/// A gateway over the data directory and store (a fresh process on restart).
async fn gateway(dir: &tempfile::TempDir, store: Arc<dyn ObjectStore>) -> (Gateway, Arc<Ingester>) {
    let s = support::stack(dir.path(), store, |_| {}).await;
    (s.gw, s.ingester)
}

fn dp(s: i64, t: i64, version: i64, z: &str, v: i64) -> DataPointValue {
    DataPointValue {
        timestamp: Some(ts(t)),
        tag_families: vec![TagFamilyForWrite {
            tags: vec![
                TagValue { value: Some(tag_value::Value::Int(Int { value: s })) },
                TagValue { value: Some(tag_value::Value::Str(Str { value: z.into() })) },
            ],
        }],
        fields: vec![FieldValue { value: Some(field_value::Value::Int(Int { value: v })) }],
        version,
    }
}

async fn write(gw: &Gateway, measure: &str, points: Vec<DataPointValue>) {
    let r = gw
        .write(WriteRequest {
            metadata: Some(Metadata { group: "g".into(), name: measure.into(), mod_revision: 0 }),
            data_points: points,
            message_id: 0,
        })
        .await;
    assert_eq!(r.status(), Status::Succeed, "{r:?}");
}

/// (s, ts, z, v) of every returned point, sorted.
async fn rows(gw: &Gateway, measure: &str, begin: i64, criteria: Option<Criteria>) -> Vec<(i64, i64, String, i64)> {
    let q = QueryRequest {
        groups: vec!["g".into()],
        name: measure.into(),
        time_range: Some(TimeRange { begin: Some(ts(begin)), end: Some(ts(begin + 2 * HOUR)) }),
        criteria,
        tag_projection: Some(TagProjection {
            tag_families: vec![tag_projection::TagFamily { name: "d".into(), tags: vec!["s".into(), "z".into()] }],
        }),
        field_projection: Some(FieldProjection { names: vec!["v".into()] }),
        limit: 10_000,
        ..Default::default()
    };
    let mut out: Vec<(i64, i64, String, i64)> = gw
        .query(q)
        .await
        .unwrap()
        .data_points
        .iter()
        .map(|d| {
            let s = tag_int(d, 0);
            let z = match d.tag_families[0].tags[1].value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(tag_value::Value::Str(x)) => x.value.clone(),
                v => panic!("{v:?}"),
            };
            let v = field_int(d);
            let t = d.timestamp.as_ref().unwrap();
            (s, t.seconds * 1_000_000_000 + t.nanos as i64, z, v)
        })
        .collect();
    out.sort();
    out
}

/// Tag `i` of the first family of a returned point, an int.
fn tag_int(d: &DataPoint, i: usize) -> i64 {
    match d.tag_families[0].tags[i].value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(tag_value::Value::Int(x)) => x.value,
        v => panic!("{v:?}"),
    }
}

/// The first field of a returned point, an int.
fn field_int(d: &DataPoint) -> i64 {
    match d.fields[0].value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(field_value::Value::Int(x)) => x.value,
        v => panic!("{v:?}"),
    }
}

fn tag_is(name: &str, z: &str) -> Option<Criteria> {
    Some(Criteria {
        exp: Some(criteria::Exp::Condition(Condition {
            name: name.into(),
            op: BinaryOp::Eq as i32,
            value: Some(TagValue { value: Some(tag_value::Value::Str(Str { value: z.into() })) }),
            field_value: None,
        })),
    })
}

fn field_is(name: &str, v: i64) -> Option<Criteria> {
    Some(Criteria {
        exp: Some(criteria::Exp::Condition(Condition {
            name: name.into(),
            op: BinaryOp::Eq as i32,
            value: None,
            field_value: Some(FieldValue { value: Some(field_value::Value::Int(Int { value: v })) }),
        })),
    })
}

#[tokio::test]
async fn an_older_version_matching_a_criterion_the_newest_fails_is_not_returned() {
    let e = env().await;
    let base = canopy_model::now_nanos() - HOUR;
    // Three placements of the old (version 1) and new (version 2) point:
    // both in the memtable, both in parts, old in a part and new in the memtable.
    for (i, placement) in ["memtable", "parts", "split"].iter().enumerate() {
        let t = base + i as i64;
        write(&e.gw, "m", vec![dp(i as i64, t, 1, "old", 10)]).await;
        if *placement != "memtable" {
            e.ingester.flush_all().await.unwrap();
        }
        write(&e.gw, "m", vec![dp(i as i64, t, 2, "new", 20)]).await;
        if *placement == "parts" {
            e.ingester.flush_all().await.unwrap();
        }
        let s = Some(i as i64);
        let only = |rows: Vec<(i64, i64, String, i64)>| rows.into_iter().filter(|r| Some(r.0) == s).collect::<Vec<_>>();
        assert_eq!(only(rows(&e.gw, "m", base - 1, tag_is("z", "old")).await), vec![], "{placement}: tag criterion");
        assert_eq!(only(rows(&e.gw, "m", base - 1, field_is("v", 10)).await), vec![], "{placement}: field criterion");
        assert_eq!(only(rows(&e.gw, "m", base - 1, tag_is("z", "new")).await), vec![(i as i64, t, "new".into(), 20)], "{placement}");
        assert_eq!(only(rows(&e.gw, "m", base - 1, field_is("v", 20)).await), vec![(i as i64, t, "new".into(), 20)], "{placement}");
    }
}

/// Rewrites of every point spread over many memtable chunks (and, after a
/// flush, over parts and chunks) answer as if one table held the winners:
/// the highest version, then the latest write.
#[tokio::test]
async fn rewrites_spread_over_many_memtable_chunks_answer_like_one_table() {
    use rand::{Rng, SeedableRng};
    let e = env().await;
    let seed = support::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = canopy_model::now_nanos() - HOUR;
    let n = canopy_ingester::HEAD_ROWS_MAX as i64 + 1000;
    let mut oracle: std::collections::BTreeMap<(i64, i64), (i64, String, i64)> = Default::default();
    for round in 0..4i64 {
        let mut batch = Vec::new();
        for k in 0..n {
            let (s, t) = (k % 7, base + k);
            let version = rng.random_range(0..3);
            let (z, v) = (if rng.random_bool(0.5) { "a" } else { "b" }, round * 1_000_000 + k);
            batch.push(dp(s, t, version, z, v));
            if oracle.get(&(s, t)).is_none_or(|(kept, _, _)| version >= *kept) {
                oracle.insert((s, t), (version, z.into(), v));
            }
        }
        for chunk in batch.chunks(500) {
            write(&e.gw, "m", chunk.to_vec()).await;
        }
        if round == 1 {
            e.ingester.flush_all().await.unwrap();
        }
        let want = |z: Option<&str>| -> Vec<(i64, i64, String, i64)> {
            let mut w: Vec<_> = oracle
                .iter()
                .filter(|(_, (_, tag, _))| z.is_none_or(|z| tag == z))
                .map(|((s, t), (_, tag, v))| (*s, *t, tag.clone(), *v))
                .collect();
            w.sort();
            w
        };
        assert_eq!(rows(&e.gw, "m", base - 1, None).await, want(None), "round {round} (seed {seed})");
        assert_eq!(rows(&e.gw, "m", base - 1, tag_is("z", "a")).await, want(Some("a")), "round {round} (seed {seed})");
    }
    e.ingester.flush_all().await.unwrap();
    let all: Vec<_> = oracle.iter().map(|((s, t), (_, z, v))| (*s, *t, z.clone(), *v)).collect();
    assert_eq!(rows(&e.gw, "m", base - 1, None).await, all, "after the last flush (seed {seed})");
}

/// One write that holds a point twice (same version) across the seal of a
/// memtable chunk: the later copy wins, before and after the flush, as it
/// does within one chunk.
#[tokio::test]
async fn a_write_repeating_a_point_across_a_chunk_seal_keeps_the_later_copy() {
    let e = env().await;
    let base = canopy_model::now_nanos() - HOUR;
    let n = canopy_ingester::HEAD_ROWS_MAX as i64;
    let mut batch: Vec<DataPointValue> = (0..n).map(|k| dp(k % 7, base + k, 0, "a", k)).collect();
    batch.push(dp(0, base, 0, "b", -1));
    write(&e.gw, "m", batch).await;
    let first = |rows: Vec<(i64, i64, String, i64)>| rows.into_iter().find(|r| r.0 == 0 && r.1 == base);
    assert_eq!(first(rows(&e.gw, "m", base - 1, None).await), Some((0, base, "b".into(), -1)), "before the flush");
    e.ingester.flush_all().await.unwrap();
    assert_eq!(first(rows(&e.gw, "m", base - 1, None).await), Some((0, base, "b".into(), -1)), "after the flush");
}

#[tokio::test]
async fn a_part_holding_several_measures_answers_each() {
    let e = env().await;
    let other = testing::measure("g", "other", &[("s", TagType::Int), ("z", TagType::String)], &[("v", FieldType::Int)], &["s"]);
    e.gw.create_measure(Some(other)).await.unwrap();
    let base = canopy_model::now_nanos() - HOUR;
    write(&e.gw, "m", (0..5).map(|i| dp(i, base + i, 0, "m", i)).collect()).await;
    write(&e.gw, "other", (0..3).map(|i| dp(i, base + i, 0, "o", 100 + i)).collect()).await;
    assert_eq!(e.ingester.flush_all().await.unwrap(), 1, "one shard, one segment: one part");
    let catalog = CatalogStore::new(e.store.clone()).load_latest("g", 0).await.unwrap();
    assert_eq!(catalog.parts.len(), 1);
    assert_eq!(catalog.parts[0].measures.keys().collect::<Vec<_>>(), ["m", "other"]);
    assert_eq!(rows(&e.gw, "m", base - 1, None).await, (0..5).map(|i| (i, base + i, "m".to_string(), i)).collect::<Vec<_>>());
    assert_eq!(rows(&e.gw, "other", base - 1, None).await, (0..3).map(|i| (i, base + i, "o".to_string(), 100 + i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_flush_racing_a_compactor_commit_rebases_and_a_restart_keeps_the_watermark() {
    let e = env().await;
    let base = canopy_model::now_nanos() - HOUR;
    let mut want = Vec::new();
    for k in 0..3i64 {
        let pts: Vec<DataPointValue> = (0..4).map(|i| dp(i, base + k * 10 + i, 0, "z", k * 10 + i)).collect();
        write(&e.gw, "m", pts).await;
        want.extend((0..4).map(|i| (i, base + k * 10 + i, "z".to_string(), k * 10 + i)));
        e.ingester.flush_all().await.unwrap();
    }
    // A compactor of its own (another process, as far as the ingester
    // knows) merges the three parts: the ingester's view is now stale.
    let policy = PolicyConfig { fanout: 2, tier_base_bytes: 1 << 10, parts_max: 2, inputs_max: 4 };
    let compactor = Compactor::new(CompactorConfig { policy, ..CompactorConfig::default() }, e.store.clone());
    let spec = GroupSpec::compile(&e.gw.registry.get_group("g").await.unwrap()).unwrap();
    let report = compactor.run_shard(&spec, 0, canopy_model::now_nanos() / 1_000_000).await.unwrap();
    assert!(report.merges > 0, "{report:?}");
    let cs = CatalogStore::new(e.store.clone());
    let compacted = cs.load_latest("g", 0).await.unwrap();
    let watermark = compacted.watermark(e.ingester.wal_id());
    assert!(watermark > 0);

    // The next flush commits on a stale base: it must land on top of the
    // compactor's version, keeping the merged part and adding its own.
    write(&e.gw, "m", vec![dp(9, base + 100, 0, "z", 99)]).await;
    want.push((9, base + 100, "z".to_string(), 99));
    want.sort();
    e.ingester.flush_all().await.unwrap();
    let after = cs.load_latest("g", 0).await.unwrap();
    assert!(after.version > compacted.version);
    for p in &compacted.parts {
        assert!(after.parts.iter().any(|q| q.path == p.path), "the merged part {} was dropped by the flush", p.path);
    }
    assert_eq!(after.parts.len(), compacted.parts.len() + 1);
    assert!(after.watermark(e.ingester.wal_id()) > watermark);
    assert_eq!(rows(&e.gw, "m", base - 1, None).await, want);

    // A restart after all that replays nothing twice and loses nothing.
    let wal_id = e.ingester.wal_id().to_string();
    let Env { gw, ingester, store, dir } = e;
    drop((gw, ingester));
    let (gw, ingester) = gateway(&dir, store.clone()).await;
    assert_eq!(ingester.wal_id(), wal_id);
    assert_eq!(ingester.memtable_bytes(), 0, "everything was covered by the watermark");
    assert_eq!(rows(&gw, "m", base - 1, None).await, want);
}

/// `v` of every returned point in answer order (`None` for null).
fn values(resp: &QueryResponse) -> Vec<Option<i64>> {
    resp.data_points
        .iter()
        .map(|d| match d.fields[0].value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(field_value::Value::Int(i)) => Some(i.value),
            Some(field_value::Value::Null(_)) | None => None,
            v => panic!("{v:?}"),
        })
        .collect()
}

#[tokio::test]
async fn top_n_ranks_nulls_last_applies_offset_after_the_top_and_buckets_can_run_newest_first() {
    use canopy_api::v1::query_request::{Aggregation, GroupBy, OrderBy, Top};
    let e = env().await;
    let base = canopy_model::now_nanos() - HOUR;
    let vs = [Some(5), None, Some(3), Some(9), None, Some(1), Some(7)];
    let pts = vs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut p = dp(i as i64, base + i as i64 * 60_000_000_000, 0, "z", 0);
            p.fields[0] = FieldValue { value: v.map(|v| field_value::Value::Int(Int { value: v })) };
            p
        })
        .collect();
    write(&e.gw, "m", pts).await;
    let q = |top: Option<Top>, offset: u32, limit: u32| QueryRequest {
        groups: vec!["g".into()],
        name: "m".into(),
        time_range: Some(TimeRange { begin: Some(ts(base - 1)), end: Some(ts(base + HOUR)) }),
        field_projection: Some(FieldProjection { names: vec!["v".into()] }),
        top,
        offset,
        limit,
        ..Default::default()
    };
    let top = |n: i32, sort: Sort| Some(Top { number: n, field_name: "v".into(), field_value_sort: sort as i32 });
    for placement in ["memtable", "parts"] {
        if placement == "parts" {
            e.ingester.flush_all().await.unwrap();
        }
        let got = |r: QueryRequest| {
            let gw = e.gw.clone();
            async move { values(&gw.query(r).await.unwrap()) }
        };
        assert_eq!(got(q(top(7, Sort::Desc), 0, 100)).await, [Some(9), Some(7), Some(5), Some(3), Some(1), None, None], "{placement}");
        assert_eq!(got(q(top(7, Sort::Asc), 0, 100)).await, [Some(1), Some(3), Some(5), Some(7), Some(9), None, None], "{placement}");
        // Offset and limit page through the top N, not through all rows.
        assert_eq!(got(q(top(4, Sort::Desc), 1, 2)).await, [Some(7), Some(5)], "{placement}");
        assert_eq!(got(q(top(4, Sort::Desc), 3, 10)).await, [Some(3)], "{placement}");

        // Aggregated: the max per series, nulls (series without a value) last.
        let mut agg = q(top(10, Sort::Desc), 0, 100);
        agg.group_by = Some(GroupBy {
            tag_projection: Some(TagProjection {
                tag_families: vec![tag_projection::TagFamily { name: "d".into(), tags: vec!["s".into()] }],
            }),
            field_name: "v".into(),
            bucket_millis: 0,
        });
        agg.agg = Some(Aggregation { function: AggregationFunction::Max as i32, field_name: "v".into(), field_names: vec![] });
        assert_eq!(values(&e.gw.query(agg.clone()).await.unwrap()), [Some(9), Some(7), Some(5), Some(3), Some(1), None, None]);

        // One-minute buckets, newest first: one point per minute.
        agg.top = None;
        agg.group_by.as_mut().unwrap().tag_projection = None;
        agg.group_by.as_mut().unwrap().bucket_millis = 60_000;
        agg.agg.as_mut().unwrap().function = AggregationFunction::Count as i32;
        agg.order_by = Some(OrderBy { sort: Sort::Desc as i32 });
        let resp = e.gw.query(agg).await.unwrap();
        let stamps: Vec<i64> = resp.data_points.iter().map(|d| d.timestamp.as_ref().unwrap().seconds).collect();
        let mut want: Vec<i64> = (0..7).map(|i| (base + i * 60_000_000_000) / 60_000_000_000 * 60).collect();
        want.reverse();
        assert_eq!(stamps, want, "{placement}: buckets newest first");
        let counts: Vec<Option<i64>> = vs.iter().rev().map(|v| Some(v.is_some() as i64)).collect();
        assert_eq!(values(&resp), counts, "{placement}: newest minute first; nulls are not counted");
    }
}

/// Object keys under `parts/`.
async fn part_objects(store: &Arc<dyn ObjectStore>) -> std::collections::BTreeSet<String> {
    use futures::TryStreamExt;
    store.list(Some(&"parts".into())).map_ok(|m| m.location.to_string()).try_collect().await.unwrap()
}

#[tokio::test]
async fn a_crash_between_a_flushs_upload_and_its_commit_loses_nothing_and_duplicates_nothing() {
    let e = env().await;
    let base = canopy_model::now_nanos() - HOUR;
    let mut want: Vec<(i64, i64, String, i64)> = (0..6).map(|i| (i % 2, base + i, "z".to_string(), i)).collect();
    want.sort();
    write(&e.gw, "m", (0..6).map(|i| dp(i % 2, base + i, 0, "z", i)).collect()).await;
    let Env { gw, ingester, store, dir } = e;
    drop((gw, ingester));

    // A process that dies right after uploading its flush's parts.
    let crashing = support::stack(dir.path(), store.clone(), |s| s.ingester.crash_before_commit = true).await;
    assert!(crashing.ingester.flush_all().await.is_err());
    drop(crashing);
    let orphans = part_objects(&store).await;
    assert!(!orphans.is_empty(), "the crashed flush uploaded its parts");
    assert!(CatalogStore::new(store.clone()).load_latest("g", 0).await.unwrap().parts.is_empty(), "but committed nothing");

    // Restarted: the WAL brings every point back, the orphans stay invisible.
    let (gw, ingester) = gateway(&dir, store.clone()).await;
    assert_eq!(rows(&gw, "m", base - 1, None).await, want);
    ingester.flush_all().await.unwrap();
    assert_eq!(rows(&gw, "m", base - 1, None).await, want, "after the flush the orphans must not double the points");
    // GC deletes exactly the orphans; the answer stays.
    let gc = Compactor::new(
        CompactorConfig { gc_grace: std::time::Duration::ZERO, orphan_min_age: std::time::Duration::ZERO, ..CompactorConfig::default() },
        store.clone(),
    );
    let spec = GroupSpec::compile(&gw.registry.get_group("g").await.unwrap()).unwrap();
    gc.run_shard(&spec, 0, canopy_model::now_nanos() / 1_000_000 + 1).await.unwrap();
    let left = part_objects(&store).await;
    assert!(left.is_disjoint(&orphans), "orphans left: {:?}", left.intersection(&orphans).collect::<Vec<_>>());
    let committed: std::collections::BTreeSet<String> =
        CatalogStore::new(store.clone()).load_latest("g", 0).await.unwrap().parts.iter().map(|p| p.path.clone()).collect();
    assert_eq!(left, committed);
    assert_eq!(rows(&gw, "m", base - 1, None).await, want);
}

#[tokio::test]
async fn a_corrupt_catalog_version_is_an_error_that_names_it_never_an_empty_shard() {
    use object_store::ObjectStoreExt;
    let e = env().await;
    let base = canopy_model::now_nanos() - HOUR;
    write(&e.gw, "m", vec![dp(1, base, 0, "z", 1)]).await;
    e.ingester.flush_all().await.unwrap();
    let cs = CatalogStore::new(e.store.clone());
    let latest = cs.load_latest("g", 0).await.unwrap();
    let key = canopy_storage::paths::catalog_version("g", 0, latest.version);
    let mut bytes = e.store.get(&key).await.unwrap().bytes().await.unwrap().to_vec();
    let n = bytes.len();
    bytes[n - 2] ^= 0x20;
    e.store.put(&key, bytes.into()).await.unwrap();

    // Loading fails naming the object; so does a running ingester's
    // periodic refresh (it keeps the version it holds); so does an ingester
    // taking the shard.
    let err = cs.load_latest("g", 0).await.unwrap_err().to_string();
    assert!(err.contains(key.as_ref()) && err.contains("checksum"), "{err}");
    let err = e.ingester.refresh_catalogs().await.unwrap_err().to_string();
    assert!(err.contains(key.as_ref()), "a refresh meeting a corrupt version must fail naming it: {err}");
    assert_eq!(rows(&e.gw, "m", base - 1, None).await, vec![(1, base, "z".to_string(), 1)], "the shard reads as it was, not empty");
    let Env { gw, ingester, store, dir } = e;
    drop((gw, ingester));
    let err = Ingester::open(IngesterConfig::new(dir.path().to_path_buf()), store).await.unwrap_err().to_string();
    assert!(err.contains(key.as_ref()), "the ingester must refuse to start on a corrupt catalog, naming it: {err}");
}

/// `LAST(v)` per series `s` over `[begin, end)`: (s, v) sorted.
async fn last_per_series(gw: &Gateway, begin: i64, end: i64, criteria: Option<Criteria>) -> Vec<(i64, i64)> {
    let q = QueryRequest {
        groups: vec!["g".into()],
        name: "m".into(),
        time_range: Some(TimeRange { begin: Some(ts(begin)), end: Some(ts(end)) }),
        criteria,
        group_by: Some(query_request::GroupBy {
            tag_projection: Some(TagProjection {
                tag_families: vec![tag_projection::TagFamily { name: "d".into(), tags: vec!["s".into()] }],
            }),
            field_name: String::new(),
            bucket_millis: 0,
        }),
        agg: Some(query_request::Aggregation { function: AggregationFunction::Last as i32, field_name: "v".into(), field_names: vec![] }),
        limit: 1000,
        ..Default::default()
    };
    let mut out: Vec<(i64, i64)> = gw.query(q).await.unwrap().data_points.iter().map(|d| (tag_int(d, 0), field_int(d))).collect();
    out.sort();
    out
}

/// What `LAST(v)` per series must be: per (s, ts) the highest version, then
/// the later write; per s the value at the latest ts in the window.
fn last_oracle(written: &[(i64, i64, i64, i64)], begin: i64, end: i64) -> Vec<(i64, i64)> {
    let mut winners: std::collections::BTreeMap<(i64, i64), (i64, usize, i64)> = Default::default();
    for (order, &(s, t, version, v)) in written.iter().enumerate() {
        if t < begin || t >= end {
            continue;
        }
        let w = winners.entry((s, t)).or_insert((version, order, v));
        if (version, order) > (w.0, w.1) {
            *w = (version, order, v);
        }
    }
    let mut last: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for (&(s, t), &(_, _, v)) in &winners {
        let e = last.entry(s).or_insert((t, v));
        if t >= e.0 {
            *e = (t, v);
        }
    }
    last.into_iter().map(|(s, (_, v))| (s, v)).collect()
}

#[tokio::test]
async fn the_last_value_cache_answers_last_exactly_and_only_for_windows_it_saw_whole() {
    use rand::{Rng, SeedableRng};
    let seed = support::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let e = env().await;
    let now = canopy_model::now_nanos();
    let base = now - HOUR / 2;
    let mut written: Vec<(i64, i64, i64, i64)> = Vec::new();
    for round in 0..6 {
        let batch: Vec<(i64, i64, i64, i64)> = (0..40)
            .map(|_| {
                (
                    rng.random_range(0..6),
                    base + rng.random_range(0..600) * 1_000_000_000,
                    rng.random_range(0..3),
                    rng.random_range(-1000..1000),
                )
            })
            .collect();
        write(&e.gw, "m", batch.iter().map(|&(s, t, ver, v)| dp(s, t, ver, "z", v)).collect()).await;
        written.extend(batch);
        if round % 2 == 1 {
            e.ingester.flush_all().await.unwrap();
        }
    }
    let (begin, end) = (base - 1, now + HOUR);
    let want = last_oracle(&written, begin, end);
    let hits = e.ingester.last_value_hits();
    assert_eq!(last_per_series(&e.gw, begin, end, None).await, want, "seed {seed}");
    assert!(e.ingester.last_value_hits() > hits, "the cache saw every point of this shard: it answers (seed {seed})");
    // A window ending before some series' latest point: that series' last
    // value in the window is an older point, so the query scans.
    let mid = base + 300 * 1_000_000_000;
    let hits = e.ingester.last_value_hits();
    assert_eq!(last_per_series(&e.gw, begin, mid, None).await, last_oracle(&written, begin, mid), "seed {seed}");
    assert_eq!(e.ingester.last_value_hits(), hits, "seed {seed}");
    // Criteria on a tag versions may change (`z`): the cache cannot judge them.
    let hits = e.ingester.last_value_hits();
    assert_eq!(last_per_series(&e.gw, begin, end, tag_is("z", "z")).await, want, "seed {seed}");
    assert_eq!(e.ingester.last_value_hits(), hits, "seed {seed}");

    // After a restart the cache has not seen what is in parts: windows
    // reaching into them scan; a window after them is answered again.
    let Env { gw, ingester, store, dir } = e;
    drop((gw, ingester));
    let (gw, ingester) = gateway(&dir, store.clone()).await;
    assert_eq!(last_per_series(&gw, begin, end, None).await, want, "after a restart (seed {seed})");
    assert_eq!(ingester.last_value_hits(), 0, "parts the cache never saw are in the window (seed {seed})");
    let later = base + 700 * 1_000_000_000;
    let fresh: Vec<(i64, i64, i64, i64)> = (0..6).map(|s| (s, later + s * 1_000_000_000, 0, 5000 + s)).collect();
    write(&gw, "m", fresh.iter().map(|&(s, t, ver, v)| dp(s, t, ver, "z", v)).collect()).await;
    written.extend(fresh);
    assert_eq!(last_per_series(&gw, later, end, None).await, last_oracle(&written, later, end), "seed {seed}");
    assert_eq!(ingester.last_value_hits(), 1, "seed {seed}");
}
