//! Process metrics in the Prometheus text format (`GET /metrics`) and the
//! health endpoint (`GET /api/healthz`), shared by every role.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

type Gauge = Box<dyn Fn() -> f64 + Send + Sync>;

/// The counters every role keeps, plus gauges a role registers.
pub struct RoleMetrics {
    /// `standalone`, `liaison`, `ingester`, `querier`.
    pub role: String,
    /// Write requests handled (external writes at a liaison, routed batches at an ingester).
    pub requests: Counter,
    /// Points acknowledged.
    pub points: Counter,
    /// Requests that failed.
    pub errors: Counter,
    /// Queries answered (or query fragments executed).
    pub queries: Counter,
    /// Queries that failed.
    pub query_errors: Counter,
    started_at: f64,
    /// Registered (kind, name, help, read) metrics, kind `gauge` or `counter`.
    gauges: Mutex<Vec<(&'static str, String, String, Gauge)>>,
    /// The object store's request and byte counters, when this role has one.
    store: Mutex<Option<Arc<canopy_storage::StoreCounters>>>,
    /// The part cache's hit and miss counters, when this role reads parts.
    cache: Mutex<Option<Arc<canopy_querier::CacheCounters>>>,
}

impl std::fmt::Debug for RoleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleMetrics").field("role", &self.role).finish_non_exhaustive()
    }
}

impl RoleMetrics {
    /// Metrics of a process playing `role`.
    pub fn new(role: &str) -> Arc<RoleMetrics> {
        Arc::new(RoleMetrics {
            role: role.to_string(),
            requests: Counter::default(),
            points: Counter::default(),
            errors: Counter::default(),
            queries: Counter::default(),
            query_errors: Counter::default(),
            started_at: canopy_model::now_nanos() as f64 / 1e9,
            gauges: Mutex::new(Vec::new()),
            store: Mutex::new(None),
            cache: Mutex::new(None),
        })
    }

    /// Serves the object store's counters as `canopy_object_store_requests_total`
    /// and `canopy_object_store_bytes_total`, labelled by operation.
    pub fn count_store(&self, counters: Arc<canopy_storage::StoreCounters>) {
        *self.store.lock().expect("store lock") = Some(counters);
    }

    /// Serves the part cache's counters as `canopy_cache_hits_total{tier}`
    /// (memory, disk) and `canopy_cache_misses_total`, in pages.
    pub fn count_cache(&self, counters: Arc<canopy_querier::CacheCounters>) {
        *self.cache.lock().expect("cache lock") = Some(counters);
    }

    /// Registers a gauge read at every scrape.
    pub fn gauge(&self, name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.gauges.lock().expect("gauges lock").push(("gauge", name.to_string(), help.to_string(), Box::new(read)));
    }

    /// Registers a counter kept elsewhere, read at every scrape.
    pub fn counter(&self, name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.gauges.lock().expect("gauges lock").push(("counter", name.to_string(), help.to_string(), Box::new(read)));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let role = &self.role;
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{role=\"{role}\"}} {value}");
        };
        metric("canopy_up", "gauge", "1 while the process serves.", 1.0);
        metric("canopy_process_start_time_seconds", "gauge", "Start time of the process, Unix seconds.", self.started_at);
        metric("canopy_write_requests_total", "counter", "Write requests handled.", self.requests.get() as f64);
        metric("canopy_points_written_total", "counter", "Points acknowledged.", self.points.get() as f64);
        metric("canopy_write_errors_total", "counter", "Write requests that failed.", self.errors.get() as f64);
        metric("canopy_queries_total", "counter", "Queries (or query fragments) executed.", self.queries.get() as f64);
        metric("canopy_query_errors_total", "counter", "Queries that failed.", self.query_errors.get() as f64);
        for (kind, name, help, read) in self.gauges.lock().expect("gauges lock").iter() {
            metric(name, kind, help, read());
        }
        if let Some(c) = self.store.lock().expect("store lock").as_ref() {
            let snap = c.snapshot();
            for (name, help, bytes) in [
                ("canopy_object_store_requests_total", "Object store requests, by operation.", false),
                ("canopy_object_store_bytes_total", "Object store bytes transferred, by operation.", true),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (op, requests, b) in &snap {
                    let _ = writeln!(out, "{name}{{role=\"{role}\",op=\"{op}\"}} {}", if bytes { *b } else { *requests });
                }
            }
        }
        if let Some(c) = self.cache.lock().expect("cache lock").as_ref() {
            let name = "canopy_cache_hits_total";
            let _ = writeln!(out, "# HELP {name} Part ranges served by the part cache, by tier.\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{role=\"{role}\",tier=\"memory\"}} {}", c.memory_hits());
            let _ = writeln!(out, "{name}{{role=\"{role}\",tier=\"disk\"}} {}", c.disk_hits());
            let name = "canopy_cache_misses_total";
            let _ = writeln!(out, "# HELP {name} Part ranges the part cache fetched from the object store.\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{role=\"{role}\"}} {}", c.misses());
        }
        out
    }
}

async fn metrics(State(m): State<Arc<RoleMetrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render())
}

async fn healthz(State(m): State<Arc<RoleMetrics>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "SERVING", "role": m.role }))
}

/// `GET /api/healthz` and `GET /metrics`.
pub fn ops_router(m: Arc<RoleMetrics>) -> Router {
    Router::new().route("/api/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_in_text_format() {
        let m = RoleMetrics::new("ingester");
        m.points.add(42);
        m.gauge("canopy_memtable_bytes", "Bytes in memtables.", || 7.0);
        let text = m.render();
        assert!(text.contains("canopy_points_written_total{role=\"ingester\"} 42\n"), "{text}");
        assert!(text.contains("# TYPE canopy_memtable_bytes gauge\ncanopy_memtable_bytes{role=\"ingester\"} 7\n"), "{text}");
        let (store, counters) = canopy_storage::CountingStore::wrap(std::sync::Arc::new(object_store::memory::InMemory::new()));
        m.count_store(counters);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(object_store::ObjectStoreExt::put(store.as_ref(), &"x".into(), vec![1u8; 5].into())).unwrap();
        let text = m.render();
        assert!(text.contains("canopy_object_store_requests_total{role=\"ingester\",op=\"put\"} 1\n"), "{text}");
        assert!(text.contains("canopy_object_store_bytes_total{role=\"ingester\",op=\"put\"} 5\n"), "{text}");
    }
}
