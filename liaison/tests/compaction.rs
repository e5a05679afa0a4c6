//! The compactor against the in-process data plane: randomized rounds of
//! concurrent writes, flushes, compactions and queries checked against an
//! oracle; a query pinned before a compaction commit; a compactor killed
//! mid-merge. (Retention runs end to end in the binary's tests.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_api::v1::*;
use canopy_compactor::{CompactError, Compactor, CompactorConfig, PolicyConfig};
use canopy_ingester::Ingester;
use canopy_liaison::Gateway;
use canopy_model::{GroupSpec, QueryPlan, testing};
use canopy_querier::Querier;
use canopy_storage::CatalogStore;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

mod support;

use support::HOUR;

use canopy_model::{nanos_to_timestamp as ts, now_nanos};

struct Env {
    gw: Gateway,
    ingester: Arc<Ingester>,
    querier: Arc<Querier>,
    store: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
}

async fn env(ccfg: CompactorConfig, shards: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let support::Stack { mut gw, ingester, querier, store } = support::stack(dir.path(), store, |s| s.compactor = ccfg).await;
    // Queries are bounded well inside the GC grace below (6 s), as the
    // server's options require, yet loose enough for a loaded 2-core machine.
    gw.query_timeout = Duration::from_secs(5);
    support::create_g_m(&gw, shards, true).await;
    Env { gw, ingester, querier, store, _dir: dir }
}

/// (series, ts) -> (value, version)
type Rows = BTreeMap<(i64, i64), (i64, i64)>;

fn dp(s: i64, t: i64, version: i64, v: i64) -> DataPointValue {
    DataPointValue {
        timestamp: Some(ts(t)),
        tag_families: vec![TagFamilyForWrite {
            tags: vec![
                TagValue { value: Some(tag_value::Value::Int(Int { value: s })) },
                TagValue { value: Some(tag_value::Value::Str(Str { value: format!("z{}", v % 3) })) },
            ],
        }],
        fields: vec![FieldValue { value: Some(field_value::Value::Int(Int { value: v })) }],
        version,
    }
}

async fn write(gw: &Gateway, points: Vec<DataPointValue>) {
    let r = gw
        .write(WriteRequest {
            metadata: Some(Metadata { group: "g".into(), name: "m".into(), mod_revision: 0 }),
            data_points: points,
            message_id: 0,
        })
        .await;
    assert_eq!(r.status(), Status::Succeed, "{r:?}");
}

fn query_req(begin: i64, end: i64) -> QueryRequest {
    QueryRequest {
        groups: vec!["g".into()],
        name: "m".into(),
        time_range: Some(TimeRange { begin: Some(ts(begin)), end: Some(ts(end)) }),
        tag_projection: Some(TagProjection { tag_families: vec![tag_projection::TagFamily { name: "d".into(), tags: vec!["s".into()] }] }),
        field_projection: Some(FieldProjection { names: vec!["v".into()] }),
        limit: 100_000,
        ..Default::default()
    }
}

fn to_rows(resp: &QueryResponse) -> Rows {
    let mut out = Rows::new();
    for d in &resp.data_points {
        let s = match d.tag_families[0].tags[0].value.as_ref().unwrap().value.as_ref().unwrap() {
            tag_value::Value::Int(i) => i.value,
            v => panic!("{v:?}"),
        };
        let v = match d.fields[0].value.as_ref().unwrap().value.as_ref().unwrap() {
            field_value::Value::Int(i) => i.value,
            v => panic!("{v:?}"),
        };
        let t = d.timestamp.as_ref().unwrap();
        let key = (s, t.seconds * 1_000_000_000 + t.nanos as i64);
        assert!(out.insert(key, (v, d.version)).is_none(), "{key:?} returned twice");
    }
    out
}

async fn query_all(gw: &Gateway, begin: i64) -> Rows {
    to_rows(&gw.query(query_req(begin, now_nanos() + HOUR)).await.unwrap())
}

/// Applies an acknowledged write: the highest version wins, then the later write.
fn apply(oracle: &mut Rows, s: i64, t: i64, version: i64, v: i64) {
    match oracle.get(&(s, t)) {
        Some((_, old)) if *old > version => {}
        _ => {
            oracle.insert((s, t), (v, version));
        }
    }
}

type Sent = HashSet<(i64, i64)>;

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn parts_per_segment(store: &Arc<dyn ObjectStore>, shards: u32) -> Vec<usize> {
    let cs = CatalogStore::new(store.clone());
    let mut out = Vec::new();
    for shard in 0..shards {
        let c = cs.load_latest("g", shard).await.unwrap();
        let mut per: HashMap<i64, usize> = HashMap::new();
        for p in &c.parts {
            *per.entry(p.segment_start).or_default() += 1;
        }
        out.extend(per.values());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_writes_flushes_compactions_and_queries_match_the_oracle() {
    let seed = support::seed();
    let policy = PolicyConfig { fanout: 2, tier_base_bytes: 1 << 10, parts_max: 2, inputs_max: 4 };
    let ccfg = CompactorConfig {
        policy: policy.clone(),
        gc_grace: Duration::from_secs(6),
        orphan_min_age: Duration::from_secs(60),
        ..Default::default()
    };
    let e = env(ccfg, 2).await;
    let base = (now_nanos() / HOUR - 3) * HOUR;
    let slot = move |k: u64| base + k as i64 * 37_000_000_000; // 290 slots over 3 hours: several segments
    const WRITERS: i64 = 3;
    let oracle = Arc::new(Mutex::new(Rows::new()));
    // Every (value, version) ever sent per key, acknowledged or not.
    let sent: Arc<Mutex<HashMap<(i64, i64), Sent>>> = Arc::default();
    let mut total_merges = 0;
    for round in 0..12u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (gw, oracle, sent) = (e.gw.clone(), oracle.clone(), sent.clone());
            let mut rng = Rng(seed ^ (round * 31 + w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            writers.push(tokio::spawn(async move {
                for _ in 0..4 {
                    // Each writer owns series w, w+3, w+6, so "the later write" is well defined.
                    let batch: Vec<(i64, i64, i64, i64)> = (0..30)
                        .map(|_| (w + WRITERS * rng.next(3) as i64, slot(rng.next(290)), rng.next(3) as i64, rng.next(1_000_000) as i64))
                        .collect();
                    {
                        let mut sent = sent.lock().unwrap();
                        for &(s, t, ver, v) in &batch {
                            sent.entry((s, t)).or_default().insert((v, ver));
                        }
                    }
                    write(&gw, batch.iter().map(|&(s, t, ver, v)| dp(s, t, ver, v)).collect()).await;
                    let mut o = oracle.lock().unwrap();
                    for &(s, t, ver, v) in &batch {
                        apply(&mut o, s, t, ver, v);
                    }
                }
            }));
        }
        let mut background = Vec::new();
        {
            let (gw, stop) = (e.gw.clone(), stop.clone());
            background.push(tokio::spawn(async move {
                // Flush and compact while the writers run, and once more
                // after they stop, however fast they were: every round adds
                // parts, so merges happen whatever the machine's speed.
                let mut merges = 0;
                loop {
                    let last = stop.load(Ordering::Relaxed);
                    gw.data.flush().await.unwrap();
                    merges += gw.compact().await.unwrap().merges;
                    if last {
                        break merges;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        {
            let (gw, stop, oracle, sent) = (e.gw.clone(), stop.clone(), oracle.clone(), sent.clone());
            background.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let before = oracle.lock().unwrap().clone();
                    let got = query_all(&gw, base).await;
                    let sent = sent.lock().unwrap();
                    for (k, v) in &got {
                        assert!(sent.get(k).is_some_and(|vals| vals.contains(v)), "{k:?} = {v:?} was never written");
                    }
                    for k in before.keys() {
                        assert!(got.contains_key(k), "acknowledged {k:?} missing");
                    }
                }
                0
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for b in background {
            total_merges += b.await.unwrap();
        }
        assert_eq!(query_all(&e.gw, base).await, *oracle.lock().unwrap(), "round {round}");
    }
    assert!(total_merges > 0, "no merge ran in 12 rounds");

    // Catch up: every segment ends with at most parts_max parts, same answer.
    e.gw.data.flush().await.unwrap();
    let mut passes = 0;
    while e.gw.compact().await.unwrap().merges > 0 {
        passes += 1;
        assert!(passes < 100, "compaction never caught up: still merging after {passes} passes");
    }
    let counts = parts_per_segment(&e.store, 2).await;
    assert!(counts.iter().all(|&n| n <= policy.parts_max), "{counts:?}");
    assert_eq!(query_all(&e.gw, base).await, *oracle.lock().unwrap());
}

/// Writes `n` flushes' worth of points into one segment of one shard.
async fn four_parts(e: &Env, base: i64) -> Rows {
    let mut oracle = Rows::new();
    for k in 0..4i64 {
        let points: Vec<(i64, i64, i64, i64)> = (0..50).map(|i| (i % 5, base + (i * 7 + k) * 1_000_000_000, k % 2, i * 100 + k)).collect();
        write(&e.gw, points.iter().map(|&(s, t, ver, v)| dp(s, t, ver, v)).collect()).await;
        points.iter().for_each(|&(s, t, ver, v)| apply(&mut oracle, s, t, ver, v));
        e.gw.data.flush().await.unwrap();
    }
    oracle
}

async fn part_paths(store: &Arc<dyn ObjectStore>) -> HashSet<String> {
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&"parts".into())).try_collect().await.unwrap();
    metas.into_iter().map(|m| m.location.to_string()).collect()
}

#[tokio::test]
async fn a_query_pinned_before_a_compaction_commit_still_reads_its_parts() {
    let ccfg = CompactorConfig { gc_grace: Duration::from_secs(600), ..Default::default() };
    let e = env(ccfg.clone(), 1).await;
    let base = (now_nanos() / HOUR - 1) * HOUR;
    let oracle = four_parts(&e, base).await;

    // The query pins its snapshot (catalog version + memtable) ...
    let schema = e.gw.registry.measure_schema("g", "m").await.unwrap();
    let plan = QueryPlan::compile(schema.clone(), &query_req(base, now_nanos() + HOUR), now_nanos()).unwrap();
    let snap = e.ingester.snapshot("g", 0, "m", &schema.layout, None, &|p| plan.source_filter(p)).await.unwrap();
    assert_eq!(snap.catalog.parts.len(), 4);
    // ... then a compaction commits and GC runs.
    let spec = GroupSpec::compile(&e.gw.registry.get_group("g").await.unwrap()).unwrap();
    let compactor = Compactor::new(ccfg.clone(), e.store.clone());
    let now_ms = now_nanos() / 1_000_000;
    let r = compactor.run_shard(&spec, 0, now_ms).await.unwrap();
    assert_eq!(r.parts_merged, 4);
    let latest = CatalogStore::new(e.store.clone()).load_latest("g", 0).await.unwrap();
    assert_eq!(latest.parts.len(), 1);
    assert!(snap.catalog.parts.iter().all(|p| !latest.parts.contains(p)), "the pinned parts are no longer in the catalog");

    // The pinned query finishes correctly: its parts still exist.
    let partial = e.querier.execute_shard(&plan, &snap.catalog, snap.rows.clone()).await.unwrap();
    let merged = canopy_querier::merge_partials(&plan, vec![partial]).unwrap();
    let got = to_rows(&QueryResponse { data_points: canopy_querier::finish(&plan, merged), stats: None });
    assert_eq!(got, oracle);

    // Once the grace period has passed, GC deletes them; new queries use the
    // compacted part and agree.
    let r = compactor.run_shard(&spec, 0, now_ms + ccfg.gc_grace.as_millis() as i64 + 1).await.unwrap();
    assert_eq!(r.objects_deleted, 4);
    let left = part_paths(&e.store).await;
    assert!(snap.catalog.parts.iter().all(|p| !left.contains(&p.path)));
    e.ingester.refresh_catalogs().await.unwrap();
    assert_eq!(query_all(&e.gw, base).await, oracle);
}

#[tokio::test]
async fn a_compactor_killed_mid_merge_leaves_nothing_visible_and_the_next_run_completes() {
    let ccfg = CompactorConfig { gc_grace: Duration::from_secs(600), ..Default::default() };
    let e = env(ccfg.clone(), 1).await;
    let base = (now_nanos() / HOUR - 1) * HOUR;
    let oracle = four_parts(&e, base).await;
    let spec = GroupSpec::compile(&e.gw.registry.get_group("g").await.unwrap()).unwrap();
    let cs = CatalogStore::new(e.store.clone());
    let before = cs.load_latest("g", 0).await.unwrap();
    let objects_before = part_paths(&e.store).await;
    let now_ms = now_nanos() / 1_000_000;

    let killed = Compactor::new(CompactorConfig { crash_before_commit: true, holder: "killed".into(), ..ccfg.clone() }, e.store.clone());
    assert!(matches!(killed.run_shard(&spec, 0, now_ms).await, Err(CompactError::Crashed)));
    let after = cs.load_latest("g", 0).await.unwrap();
    assert_eq!(after.parts, before.parts, "no partial output is visible");
    assert_eq!(after.claims.len(), 1, "the dead compactor's claim remains");
    assert_eq!(part_paths(&e.store).await.len(), objects_before.len() + 1, "its output is an unreferenced object");
    e.ingester.refresh_catalogs().await.unwrap();
    assert_eq!(query_all(&e.gw, base).await, oracle);

    // The next compactor waits out the claim, then merges; GC removes the
    // dead compactor's output (an orphan) and the merged inputs.
    let next = Compactor::new(CompactorConfig { holder: "next".into(), ..ccfg.clone() }, e.store.clone());
    assert_eq!(next.run_shard(&spec, 0, now_ms).await.unwrap().merges, 0, "the claim still holds");
    let later = now_ms + ccfg.claim_ttl.as_millis() as i64 + 1;
    assert_eq!(next.run_shard(&spec, 0, later).await.unwrap().parts_merged, 4);
    let much_later = later + ccfg.orphan_min_age.as_millis() as i64 + ccfg.gc_grace.as_millis() as i64;
    let r = next.run_shard(&spec, 0, much_later).await.unwrap();
    assert_eq!(r.objects_deleted, 5, "4 merged inputs and 1 orphan");
    let fin = cs.load_latest("g", 0).await.unwrap();
    assert!(fin.claims.is_empty() && fin.pending_deletes.is_empty());
    let live: HashSet<String> = fin.parts.iter().map(|p| p.path.clone()).collect();
    assert_eq!(part_paths(&e.store).await, live, "exactly the catalog's parts remain");
    e.ingester.refresh_catalogs().await.unwrap();
    assert_eq!(query_all(&e.gw, base).await, oracle);
}

/// Group names drawn from every character a name may hold (dots included,
/// and the names that are dots only): a name is either refused naming the
/// field, or its parts outlive GC while the newest catalog references them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_never_deletes_a_part_the_newest_catalog_references_whatever_the_group_name() {
    let mut rng = Rng(support::seed());
    let ccfg = CompactorConfig { gc_grace: Duration::ZERO, orphan_min_age: Duration::ZERO, ..CompactorConfig::default() };
    let e = env(ccfg.clone(), 1).await;
    let compactor = Compactor::new(ccfg, e.store.clone());
    const ALPHABET: &[u8] = b"abcXYZ019_.:-";
    let mut names: Vec<String> = [".", "..", "...", ".a", "a.", "a..b", "x:y-z_0.9"].iter().map(|s| s.to_string()).collect();
    while names.len() < 19 {
        let len = 1 + rng.next(10) as usize;
        let name: String = (0..len).map(|_| ALPHABET[rng.next(ALPHABET.len() as u64) as usize] as char).collect();
        // Each name once, and not the fixture's own group.
        if name != "g" && !names.contains(&name) {
            names.push(name);
        }
    }
    let now = now_nanos();
    let mut accepted = Vec::new();
    for name in names {
        if let Err(err) = e.gw.create_group(Some(testing::group(&name, 1, 1, 1))).await {
            assert!(name.starts_with('.'), "{name:?} is a valid name but was refused: {err:?}");
            assert!(err.message.contains("group.metadata.name"), "{name:?}: {err:?}");
            continue;
        }
        accepted.push(name.clone());
        let m = testing::measure(&name, "m", &[("s", TagType::Int), ("z", TagType::String)], &[("v", FieldType::Int)], &["s"]);
        e.gw.create_measure(Some(m)).await.unwrap();
        let r =
            e.gw.write(WriteRequest {
                metadata: Some(Metadata { group: name.clone(), name: "m".into(), mod_revision: 0 }),
                data_points: (0..5).map(|i| dp(i, now - HOUR + i, 0, i)).collect(),
                message_id: 0,
            })
            .await;
        assert_eq!(r.status(), Status::Succeed, "{name:?}: {r:?}");
        e.ingester.flush_all().await.unwrap();
        let spec = GroupSpec::compile(&e.gw.registry.get_group(&name).await.unwrap()).unwrap();
        compactor.run_shard(&spec, 0, now / 1_000_000 + 1000).await.unwrap();
        let catalog = CatalogStore::new(e.store.clone()).load_latest(&name, 0).await.unwrap();
        assert!(!catalog.parts.is_empty(), "{name:?}");
        for p in &catalog.parts {
            let path = object_store::path::Path::from(p.path.as_str());
            assert!(e.store.head(&path).await.is_ok(), "{name:?}: GC deleted {} which the newest catalog references", p.path);
        }
    }
    assert!(accepted.iter().all(|n| !n.starts_with('.')), "names starting with a dot were accepted: {accepted:?}");
}

/// A crash between the start-up probe's create and delete leaves its key;
/// GC removes it once older than the orphan age, and nothing else.
#[tokio::test]
async fn a_stray_start_up_probe_is_swept_once_old_and_parts_are_not_touched() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let probe = canopy_storage::paths::probe(4242, 1);
    store.put(&probe, "create-if-absent probe".into()).await.unwrap();
    let part = object_store::path::Path::from("parts/g/0000/0/0000000000000001-00000001.arrow");
    store.put(&part, "a part no catalog names".into()).await.unwrap();
    let ccfg = CompactorConfig { orphan_min_age: Duration::from_secs(3600), ..Default::default() };
    let compactor = Compactor::new(ccfg, store.clone());
    let now_ms = now_nanos() / 1_000_000;
    assert_eq!(compactor.sweep_probes(now_ms).await.unwrap(), 0, "a probe younger than the orphan age may be in use");
    assert!(store.head(&probe).await.is_ok());
    assert_eq!(compactor.sweep_probes(now_ms + 2 * 3_600_000).await.unwrap(), 1);
    assert!(matches!(store.head(&probe).await, Err(object_store::Error::NotFound { .. })));
    assert!(store.head(&part).await.is_ok(), "the sweep only reads the probe folder");
}
