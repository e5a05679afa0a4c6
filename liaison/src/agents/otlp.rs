//! OTLP metrics: gRPC `MetricsService/Export` (port 4317) and HTTP
//! `POST /v1/metrics` (port 4318, protobuf or JSON, optionally gzip).
//!
//! Conversion follows the OpenTelemetry → Prometheus compatibility rules, so
//! the same metrics are readable through Prometheus remote read:
//! * name: characters outside `[a-zA-Z0-9_:]` become `_`; the unit is added
//!   as a suffix (`s` → `_seconds`, `By` → `_bytes`, `1` → `_ratio` for
//!   gauges, `{…}` annotations dropped, `a/b` → `_a_per_b`); monotonic sums
//!   get `_total`.
//! * gauges and sums: one float `value` per point; sums carry the labels
//!   `otel_temporality` (`cumulative`/`delta`) and `otel_monotonic`.
//! * histograms: `<name>_bucket{le="…"}` (cumulative counts, `+Inf` last),
//!   `<name>_sum`, `<name>_count`, and `<name>_min` / `<name>_max` when sent.
//! * summaries: `<name>{quantile="…"}`, `<name>_sum`, `<name>_count`.
//! * exponential histograms: one measure `<name>` whose point holds `count`,
//!   `sum`, `min`, `max`, `zero_count`, `scale`, `positive_offset`,
//!   `positive_counts`, `negative_offset`, `negative_counts` (counts as
//!   comma-separated text) — exactly what was sent.
//! * labels: the point's attributes, the resource's attributes,
//!   `otel_scope_name` / `otel_scope_version`, and `job` / `instance` from
//!   `service.namespace`/`service.name` and `service.instance.id`; names are
//!   mangled to `[a-zA-Z0-9_]` (a leading digit gets `key_`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use canopy_model::FieldVal;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use prost::Message;

use super::autoschema::{ExpansionBudget, FieldNames, RowValues, label_bytes, write_all};
use super::body::decode_body;
use super::measure_rows::MeasureRows;
use crate::error::ApiError;
use crate::service::Gateway;

/// Metric names as Prometheus expects them.
fn prom_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Label names as Prometheus expects them.
fn label_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn unit_word(u: &str, per: bool) -> String {
    let w = match (u, per) {
        ("s", true) => "second",
        ("m", true) => "minute",
        ("h", true) => "hour",
        ("d", true) => "day",
        ("w", true) => "week",
        ("mo", true) => "month",
        ("y", true) => "year",
        ("d", false) => "days",
        ("h", false) => "hours",
        ("min", false) => "minutes",
        ("s", false) => "seconds",
        ("ms", false) => "milliseconds",
        ("us", false) => "microseconds",
        ("ns", false) => "nanoseconds",
        ("By", false) => "bytes",
        ("KiBy", false) => "kibibytes",
        ("MiBy", false) => "mebibytes",
        ("GiBy", false) => "gibibytes",
        ("TiBy", false) => "tebibytes",
        ("KBy", false) => "kilobytes",
        ("MBy", false) => "megabytes",
        ("GBy", false) => "gigabytes",
        ("TBy", false) => "terabytes",
        ("m", false) => "meters",
        ("V", false) => "volts",
        ("A", false) => "amperes",
        ("J", false) => "joules",
        ("W", false) => "watts",
        ("g", false) => "grams",
        ("Cel", false) => "celsius",
        ("Hz", false) => "hertz",
        ("%", false) => "percent",
        _ => return prom_name(u).trim_matches('_').to_string(),
    };
    w.to_string()
}

/// The unit suffix for a metric, empty when none applies.
fn unit_suffix(unit: &str, gauge: bool) -> String {
    let mut u = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => u.push(c),
            _ => {}
        }
    }
    let u = u.trim();
    match u {
        "" => String::new(),
        "1" if gauge => "ratio".into(),
        "1" => String::new(),
        _ => match u.split_once('/') {
            Some((a, b)) if !b.is_empty() => {
                let a = if a.is_empty() || a == "1" { String::new() } else { unit_word(a, false) };
                let b = unit_word(b, true);
                if a.is_empty() { format!("per_{b}") } else { format!("{a}_per_{b}") }
            }
            _ => unit_word(u, false),
        },
    }
}

/// The full metric name: mangled, with unit suffix and `_total` for counters.
pub(crate) fn metric_name(name: &str, unit: &str, gauge: bool, counter: bool) -> String {
    let mut n = prom_name(name);
    let suffix = unit_suffix(unit, gauge);
    if !suffix.is_empty() && !n.ends_with(&format!("_{suffix}")) {
        n = format!("{n}_{suffix}");
    }
    if counter && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => format!("[{}]", a.values.iter().map(any_to_string).collect::<Vec<_>>().join(",")),
        Some(any_value::Value::KvlistValue(kv)) => {
            format!(
                "{{{}}}",
                kv.values
                    .iter()
                    .map(|k| format!("{}:{}", k.key, k.value.as_ref().map(any_to_string).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        _ => String::new(),
    }
}

fn add_attrs(labels: &mut BTreeMap<String, String>, attrs: &[KeyValue]) {
    for kv in attrs {
        let v = kv.value.as_ref().map(any_to_string).unwrap_or_default();
        if !v.is_empty() {
            labels.insert(label_name(&kv.key), v);
        }
    }
}

/// Rows per measure, built from an export request under the request's
/// expansion budget: the first row over it stops the conversion.
struct Rows {
    rows: BTreeMap<String, MeasureRows>,
    budget: ExpansionBudget,
    over: Option<ApiError>,
}

impl Rows {
    fn new(cfg: &super::AgentConfig) -> Rows {
        Rows { rows: BTreeMap::new(), budget: ExpansionBudget::new(cfg), over: None }
    }

    fn push(
        &mut self,
        measure: String,
        labels: &BTreeMap<String, String>,
        extra: &[(&str, String)],
        fields: Vec<(String, FieldVal)>,
        ts: u64,
    ) {
        if self.over.is_some() {
            return;
        }
        // Charged before the labels are copied for this row.
        let bytes = label_bytes(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra.iter().map(|(k, v)| (*k, v.as_str()))));
        if let Err(e) = self.budget.charge(1, bytes) {
            self.over = Some(e);
            self.rows.clear();
            return;
        }
        let mut l: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let ts = i64::try_from(ts).unwrap_or(i64::MAX);
        let (names, values): (Vec<String>, RowValues) = fields.into_iter().unzip();
        let names: FieldNames = names.into();
        self.rows.entry(measure).or_default().push(&Arc::new(l), &names, values, ts);
    }

    fn value(&mut self, measure: String, labels: &BTreeMap<String, String>, extra: &[(&str, String)], v: f64, ts: u64) {
        self.push(measure, labels, extra, vec![("value".into(), FieldVal::Float(v))], ts);
    }
}

fn number(v: &Option<number_data_point::Value>) -> Option<f64> {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => Some(*d),
        Some(number_data_point::Value::AsInt(i)) => Some(*i as f64),
        None => None,
    }
}

/// Bit 0 of data point flags: the point has no value.
const NO_RECORDED_VALUE: u32 = 1;

fn temporality(t: i32) -> String {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => "delta".into(),
        Ok(AggregationTemporality::Cumulative) => "cumulative".into(),
        _ => "unspecified".into(),
    }
}

fn convert(req: ExportMetricsServiceRequest, rows: &mut Rows) {
    for rm in req.resource_metrics {
        let mut base = BTreeMap::new();
        if let Some(res) = &rm.resource {
            add_attrs(&mut base, &res.attributes);
            let get = |k: &str| res.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.as_ref()).map(any_to_string);
            if let Some(name) = get("service.name") {
                let job = match get("service.namespace") {
                    Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
                    _ => name,
                };
                base.insert("job".into(), job);
            }
            if let Some(id) = get("service.instance.id") {
                base.insert("instance".into(), id);
            }
        }
        for sm in rm.scope_metrics {
            let mut scoped = base.clone();
            if let Some(scope) = &sm.scope {
                if !scope.name.is_empty() {
                    scoped.insert("otel_scope_name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scoped.insert("otel_scope_version".into(), scope.version.clone());
                }
            }
            for m in sm.metrics {
                convert_metric(m, &scoped, rows);
            }
        }
    }
}

fn convert_metric(m: opentelemetry_proto::tonic::metrics::v1::Metric, scoped: &BTreeMap<String, String>, rows: &mut Rows) {
    let Some(data) = m.data else { return };
    match data {
        metric::Data::Gauge(g) => {
            let name = metric_name(&m.name, &m.unit, true, false);
            for p in g.data_points.iter().filter(|p| p.flags & NO_RECORDED_VALUE == 0) {
                let mut l = scoped.clone();
                add_attrs(&mut l, &p.attributes);
                if let Some(v) = number(&p.value) {
                    rows.value(name.clone(), &l, &[], v, p.time_unix_nano);
                }
            }
        }
        metric::Data::Sum(s) => {
            let counter = s.is_monotonic;
            let name = metric_name(&m.name, &m.unit, !counter, counter);
            let extra = [("otel_temporality", temporality(s.aggregation_temporality)), ("otel_monotonic", s.is_monotonic.to_string())];
            for p in s.data_points.iter().filter(|p| p.flags & NO_RECORDED_VALUE == 0) {
                let mut l = scoped.clone();
                add_attrs(&mut l, &p.attributes);
                if let Some(v) = number(&p.value) {
                    rows.value(name.clone(), &l, &extra, v, p.time_unix_nano);
                }
            }
        }
        metric::Data::Histogram(h) => {
            let name = metric_name(&m.name, &m.unit, false, false);
            let extra = [("otel_temporality", temporality(h.aggregation_temporality))];
            for p in h.data_points.iter().filter(|p| p.flags & NO_RECORDED_VALUE == 0) {
                let mut l = scoped.clone();
                add_attrs(&mut l, &p.attributes);
                let mut cumulative = 0u64;
                for (i, bound) in p.explicit_bounds.iter().enumerate() {
                    cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                    let le = [extra[0].clone(), ("le", bound.to_string())];
                    rows.value(format!("{name}_bucket"), &l, &le, cumulative as f64, p.time_unix_nano);
                }
                let inf = [extra[0].clone(), ("le", "+Inf".to_string())];
                rows.value(format!("{name}_bucket"), &l, &inf, p.count as f64, p.time_unix_nano);
                rows.value(format!("{name}_count"), &l, &extra, p.count as f64, p.time_unix_nano);
                if let Some(sum) = p.sum {
                    rows.value(format!("{name}_sum"), &l, &extra, sum, p.time_unix_nano);
                }
                if let Some(min) = p.min {
                    rows.value(format!("{name}_min"), &l, &extra, min, p.time_unix_nano);
                }
                if let Some(max) = p.max {
                    rows.value(format!("{name}_max"), &l, &extra, max, p.time_unix_nano);
                }
            }
        }
        metric::Data::ExponentialHistogram(h) => {
            let name = metric_name(&m.name, &m.unit, false, false);
            let extra = [("otel_temporality", temporality(h.aggregation_temporality))];
            let csv = |c: &[u64]| c.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            for p in h.data_points.iter().filter(|p| p.flags & NO_RECORDED_VALUE == 0) {
                let mut l = scoped.clone();
                add_attrs(&mut l, &p.attributes);
                let (pos, neg) = (p.positive.clone().unwrap_or_default(), p.negative.clone().unwrap_or_default());
                let mut fields = vec![
                    ("count".to_string(), FieldVal::Int(p.count as i64)),
                    ("zero_count".to_string(), FieldVal::Int(p.zero_count as i64)),
                    ("scale".to_string(), FieldVal::Int(p.scale as i64)),
                    ("positive_offset".to_string(), FieldVal::Int(pos.offset as i64)),
                    ("positive_counts".to_string(), FieldVal::Str(csv(&pos.bucket_counts))),
                    ("negative_offset".to_string(), FieldVal::Int(neg.offset as i64)),
                    ("negative_counts".to_string(), FieldVal::Str(csv(&neg.bucket_counts))),
                ];
                for (k, v) in [("sum", p.sum), ("min", p.min), ("max", p.max)] {
                    if let Some(v) = v {
                        fields.push((k.to_string(), FieldVal::Float(v)));
                    }
                }
                rows.push(name.clone(), &l, &extra, fields, p.time_unix_nano);
            }
        }
        metric::Data::Summary(s) => {
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in s.data_points.iter().filter(|p| p.flags & NO_RECORDED_VALUE == 0) {
                let mut l = scoped.clone();
                add_attrs(&mut l, &p.attributes);
                for q in &p.quantile_values {
                    rows.value(name.clone(), &l, &[("quantile", q.quantile.to_string())], q.value, p.time_unix_nano);
                }
                rows.value(format!("{name}_sum"), &l, &[], p.sum, p.time_unix_nano);
                rows.value(format!("{name}_count"), &l, &[], p.count as f64, p.time_unix_nano);
            }
        }
    }
}

/// Converts and writes one export request; partial success is reported, not an error.
pub(crate) async fn export(gw: &Gateway, req: ExportMetricsServiceRequest) -> Result<ExportMetricsServiceResponse, ApiError> {
    let mut rows = Rows::new(&gw.agents.cfg);
    convert(req, &mut rows);
    if let Some(e) = rows.over {
        return Err(e);
    }
    let group = gw.agents.cfg.otlp_group.clone();
    let outcome = write_all(gw, &group, rows.rows).await?;
    let partial_success = (outcome.rejected > 0)
        .then(|| ExportMetricsPartialSuccess { rejected_data_points: outcome.rejected as i64, error_message: outcome.reasons.join("; ") });
    Ok(ExportMetricsServiceResponse { partial_success })
}

/// `POST /v1/metrics`.
pub(crate) async fn http_export(State(gw): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
    let result = async {
        let raw = decode_body(&headers, &body, gw.agents.cfg.body_bytes_max)?;
        let req: ExportMetricsServiceRequest = if json {
            serde_json::from_slice(&raw).map_err(|e| ApiError::invalid("body", format!("invalid OTLP JSON: {e}")))?
        } else {
            ExportMetricsServiceRequest::decode(raw.as_slice())
                .map_err(|e| ApiError::invalid("body", format!("invalid OTLP protobuf: {e}")))?
        };
        export(&gw, req).await
    }
    .await;
    match result {
        Ok(resp) if json => (StatusCode::OK, axum::Json(serde_json::to_value(&resp).unwrap_or_default())).into_response(),
        Ok(resp) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], resp.encode_to_vec()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The OTLP gRPC service.
#[derive(Clone)]
pub(crate) struct OtlpService(pub(crate) Gateway);

#[tonic::async_trait]
impl MetricsService for OtlpService {
    async fn export(
        &self,
        r: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(export(&self.0, r.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
        exponential_histogram_data_point::Buckets,
    };

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn gauge(name: &str, points: Vec<(u64, f64, u32)>) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points
                    .into_iter()
                    .map(|(t, v, flags)| NumberDataPoint {
                        time_unix_nano: t,
                        value: Some(number_data_point::Value::AsDouble(v)),
                        flags,
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    fn converted(req: ExportMetricsServiceRequest) -> BTreeMap<String, MeasureRows> {
        let mut rows = Rows::new(&crate::agents::AgentConfig::default());
        convert(req, &mut rows);
        assert!(rows.over.is_none());
        rows.rows
    }

    #[test]
    fn points_flagged_no_recorded_value_are_skipped() {
        let rows = converted(request(vec![gauge("g", vec![(1, 1.0, 0), (2, 2.0, NO_RECORDED_VALUE), (3, 3.0, 0)])]));
        let ts: Vec<i64> = rows["g"].rows.iter().map(|r| r.ts).collect();
        assert_eq!(ts, vec![1, 3]);
    }

    #[test]
    fn exponential_histograms_keep_negative_buckets() {
        let p = ExponentialHistogramDataPoint {
            time_unix_nano: 5,
            count: 9,
            scale: 2,
            zero_count: 1,
            positive: Some(Buckets { offset: 3, bucket_counts: vec![1, 2] }),
            negative: Some(Buckets { offset: -4, bucket_counts: vec![3, 0, 2] }),
            ..Default::default()
        };
        let m = Metric {
            name: "lat".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram { data_points: vec![p], aggregation_temporality: 2 })),
            ..Default::default()
        };
        let rows = converted(request(vec![m]));
        let row = &rows["lat"].rows[0];
        let fields: BTreeMap<&str, &FieldVal> = rows["lat"].names_of(row).iter().map(String::as_str).zip(&row.values).collect();
        assert_eq!(fields["negative_offset"], &FieldVal::Int(-4));
        assert_eq!(fields["negative_counts"], &FieldVal::Str("3,0,2".into()));
        assert_eq!(fields["positive_offset"], &FieldVal::Int(3));
        assert_eq!(fields["positive_counts"], &FieldVal::Str("1,2".into()));
    }

    #[tokio::test]
    async fn rejected_points_come_back_as_partial_success() {
        let dir = tempfile::tempdir().unwrap();
        let (gw, _) = crate::agents::test_support::two_gateways(dir.path()).await;
        let now = canopy_model::now_nanos() as u64;
        let ancient = now - 400 * 86_400 * 1_000_000_000;
        let resp = export(&gw, request(vec![gauge("mixed", vec![(now - 1_000, 1.0, 0), (ancient, 2.0, 0), (now - 2_000, 3.0, 0)])]))
            .await
            .unwrap();
        let partial = resp.partial_success.expect("a rejection is reported");
        assert_eq!(partial.rejected_data_points, 1);
        assert!(partial.error_message.contains("TTL"), "{}", partial.error_message);
        let fine = export(&gw, request(vec![gauge("mixed", vec![(now - 3_000, 4.0, 0)])])).await.unwrap();
        assert!(fine.partial_success.is_none());
    }

    #[test]
    fn names_follow_the_prometheus_conversion() {
        assert_eq!(metric_name("http.server.duration", "s", false, false), "http_server_duration_seconds");
        assert_eq!(metric_name("requests", "{request}", false, true), "requests_total");
        assert_eq!(metric_name("cpu.utilization", "1", true, false), "cpu_utilization_ratio");
        assert_eq!(metric_name("io", "By/s", true, false), "io_bytes_per_second");
        assert_eq!(metric_name("mem_bytes", "By", true, false), "mem_bytes");
        assert_eq!(metric_name("errors_total", "1", false, true), "errors_total");
        assert_eq!(metric_name("9lives", "", true, false), "_9lives");
        assert_eq!(label_name("service.instance.id"), "service_instance_id");
        assert_eq!(label_name("0x"), "key_0x");
    }

    /// Damaged OTLP protobuf is refused by the decoder or converted without a
    /// panic (whatever values survive: NaN, absurd bucket counts, empty names).
    #[test]
    fn damaged_exports_are_refused_or_converted_without_panic() {
        let valid = vec![
            request(vec![
                gauge("g", vec![(1, 1.0, 0), (2, f64::NAN, 0), (3, 3.0, NO_RECORDED_VALUE)]),
                gauge("other.metric", vec![(9, -1.0, 0)]),
            ])
            .encode_to_vec(),
        ];
        canopy_model::testing::fuzz_decoder("OTLP export", &valid, 20_000, |b| {
            ExportMetricsServiceRequest::decode(b).map(|req| {
                let mut rows = Rows::new(&crate::agents::AgentConfig::default());
                convert(req, &mut rows);
                rows.rows.len()
            })
        });
    }
}
