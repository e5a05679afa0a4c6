//! Schema on the fly for agent protocols: groups and measures are created on
//! first sight and gain tags and fields as new labels and fields appear.
//!
//! Layout of an agent measure: one tag family `labels` whose first tag,
//! `__series__`, is the entity — the full label set rendered as
//! `{name="value",...}` (names sorted) — followed by one string tag per label
//! name in order of first sight. New labels only append tags, so the entity
//! never changes and old points read the new tags as null. Names are mangled
//! to what Canopy accepts: characters other than `[A-Za-z0-9_.:-]` become
//! `_`, and a leading `.` gets a `_` in front.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use canopy_api::v1::*;
use canopy_meta::{MetaError, SchemaRegistry};
use canopy_model::{FieldVal, MeasureSchema, Point, TagVal, series_id, shard_of};

use crate::error::{ApiError, Code};
use crate::service::Gateway;

/// The entity tag of agent measures.
pub(crate) const SERIES_TAG: &str = "__series__";
/// The tag family of agent measures.
pub(crate) const LABELS_FAMILY: &str = "labels";

/// Where agent writes land and the limits they obey.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub prometheus_group: String,
    pub influx_group: String,
    pub otlp_group: String,
    /// Shards, segment width and retention of groups created on the fly.
    pub shard_num: u32,
    pub segment_hours: u32,
    pub ttl_days: u32,
    pub series_per_measure_max: usize,
    pub labels_per_series_max: usize,
    pub label_bytes_max: usize,
    /// Largest request body after decompression.
    pub body_bytes_max: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            prometheus_group: "prometheus".into(),
            influx_group: "influx".into(),
            otlp_group: "otlp".into(),
            shard_num: 2,
            segment_hours: 24,
            ttl_days: 30,
            series_per_measure_max: 100_000,
            labels_per_series_max: 64,
            label_bytes_max: 2048,
            body_bytes_max: 64 << 20,
        }
    }
}

/// One point from an agent: labels (any order), fields, time in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentRow {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) fields: Vec<(String, FieldVal)>,
    pub(crate) ts: i64,
}

/// What a write did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) accepted: usize,
    pub(crate) rejected: usize,
    /// The first few reasons for rejections.
    pub(crate) reasons: Vec<String>,
}

impl Outcome {
    fn reject(&mut self, why: String) {
        self.rejected += 1;
        if self.reasons.len() < 5 {
            self.reasons.push(why);
        }
    }

    /// Adds another measure's outcome.
    pub(crate) fn merge(&mut self, o: Outcome) {
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        for r in o.reasons {
            if self.reasons.len() < 5 {
                self.reasons.push(r);
            }
        }
    }

    /// Ok if nothing was rejected, else a 400 naming the first reasons.
    pub(crate) fn into_result(self) -> Result<usize, ApiError> {
        if self.rejected == 0 {
            return Ok(self.accepted);
        }
        Err(ApiError::new(
            Code::InvalidArgument,
            format!("{} points rejected ({} accepted): {}", self.rejected, self.accepted, self.reasons.join("; ")),
        ))
    }
}

/// Writes the rows of several measures concurrently (so their WAL fsyncs
/// share group commits) and sums the outcomes.
pub(crate) async fn write_all(
    gw: &Gateway,
    group: &str,
    by_measure: impl IntoIterator<Item = (String, Vec<AgentRow>)>,
) -> Result<Outcome, ApiError> {
    let writes = by_measure.into_iter().map(|(measure, rows)| async move { gw.agents.write(gw, group, &measure, rows).await });
    let mut outcome = Outcome::default();
    for r in futures::future::join_all(writes).await {
        outcome.merge(r?);
    }
    Ok(outcome)
}

/// Mangles a name into one Canopy accepts.
pub(crate) fn sanitize(name: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if !name.is_empty() && !name.starts_with('.') && name.len() <= 255 && name.chars().all(valid) {
        return name.to_string();
    }
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s.truncate(255);
    s
}

/// The series key: the label set as `{a="x",b="y"}`, names sorted.
pub(crate) fn series_key(labels: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = labels.iter().collect();
    sorted.sort();
    let mut out = String::from("{");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(&v.replace('\\', "\\\\").replace('"', "\\\""));
        out.push('"');
    }
    out.push('}');
    out
}

fn field_type(v: &FieldVal) -> Option<FieldType> {
    Some(match v {
        FieldVal::Float(_) => FieldType::Float,
        FieldVal::Int(_) => FieldType::Int,
        FieldVal::Str(_) => FieldType::String,
        FieldVal::Bool(_) => FieldType::Bool,
        FieldVal::Binary(_) => FieldType::DataBinary,
        FieldVal::Null => return None,
    })
}

/// Creates and evolves agent schemas, and writes agent rows through them.
#[derive(Debug)]
pub(crate) struct AutoSchema {
    registry: Arc<SchemaRegistry>,
    pub(crate) cfg: AgentConfig,
    /// Series seen per (group, measure), for the series limit. Rebuilt from
    /// new writes after a restart, so the limit is approximate by design.
    series: Mutex<HashMap<(String, String), HashSet<u64>>>,
    /// Serializes schema changes (rare: only when something new appears).
    changes: tokio::sync::Mutex<()>,
}

impl AutoSchema {
    pub(crate) fn new(registry: Arc<SchemaRegistry>, cfg: AgentConfig) -> AutoSchema {
        AutoSchema { registry, cfg, series: Mutex::new(HashMap::new()), changes: tokio::sync::Mutex::new(()) }
    }

    fn covers(schema: &MeasureSchema, tags: &BTreeSet<String>, fields: &BTreeMap<String, FieldType>) -> bool {
        tags.iter().all(|t| schema.layout.tag_index(t).is_some()) && fields.keys().all(|f| schema.layout.field_index(f).is_some())
    }

    /// The measure's schema with at least these tags and fields (existing
    /// fields keep their types; the caller rejects values that conflict).
    async fn ensure(
        &self,
        group: &str,
        measure: &str,
        tags: &BTreeSet<String>,
        fields: &BTreeMap<String, FieldType>,
    ) -> Result<Arc<MeasureSchema>, ApiError> {
        if let Ok(s) = self.registry.measure_schema(group, measure).await
            && Self::covers(&s, tags, fields)
        {
            return Ok(s);
        }
        let _serial = self.changes.lock().await;
        match self.registry.get_group(group).await {
            Ok(_) => {}
            Err(MetaError::NotFound(_)) => {
                let g = Group {
                    metadata: Some(Metadata { name: group.into(), ..Default::default() }),
                    catalog: Catalog::Measure as i32,
                    resource_opts: Some(ResourceOpts {
                        shard_num: self.cfg.shard_num,
                        segment_interval: Some(IntervalRule { unit: interval_rule::Unit::Hour as i32, num: self.cfg.segment_hours }),
                        ttl: Some(IntervalRule { unit: interval_rule::Unit::Day as i32, num: self.cfg.ttl_days }),
                    }),
                    updated_at: None,
                };
                match self.registry.create_group(g).await {
                    Ok(()) | Err(MetaError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let spec = |name: &str| TagSpec { name: name.into(), r#type: TagType::String as i32 };
        match self.registry.get_measure(group, measure).await {
            Err(MetaError::NotFound(_)) => {
                let m = Measure {
                    metadata: Some(Metadata { group: group.into(), name: measure.into(), mod_revision: 0 }),
                    tag_families: vec![TagFamilySpec {
                        name: LABELS_FAMILY.into(),
                        tags: std::iter::once(SERIES_TAG).chain(tags.iter().map(String::as_str)).map(spec).collect(),
                    }],
                    fields: fields.iter().map(|(n, t)| FieldSpec { name: n.clone(), field_type: *t as i32 }).collect(),
                    entity: Some(Entity { tag_names: vec![SERIES_TAG.into()] }),
                    interval: String::new(),
                    updated_at: None,
                    // The entity is the full label set: labels never differ between versions.
                    tags_follow_entity: true,
                };
                match self.registry.create_measure(m).await {
                    Ok(_) | Err(MetaError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(mut m) => {
                let have = self.registry.measure_schema(group, measure).await?;
                let mut changed = false;
                for t in tags.iter().filter(|t| have.layout.tag_index(t).is_none()) {
                    m.tag_families[0].tags.push(spec(t));
                    changed = true;
                }
                for (f, ty) in fields.iter().filter(|(f, _)| have.layout.field_index(f).is_none()) {
                    m.fields.push(FieldSpec { name: f.clone(), field_type: *ty as i32 });
                    changed = true;
                }
                if changed {
                    self.registry.update_measure(m).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.registry.measure_schema(group, measure).await?)
    }

    /// Turns rows into points in the schema's layout — validated here, so
    /// they go straight to the data plane: the series limit, field types and
    /// the group's TTL are checked; label strings are moved, not copied.
    fn build_points(
        &self,
        group: &str,
        measure: &str,
        schema: &MeasureSchema,
        rows: Vec<AgentRow>,
        now: i64,
        out: &mut Outcome,
    ) -> Vec<Point> {
        let layout = &schema.layout;
        let oldest = now.saturating_sub(schema.group.ttl_nanos);
        let mut points = Vec::with_capacity(rows.len());
        let mut series = self.series.lock().expect("series lock");
        let seen = series.entry((group.to_string(), measure.to_string())).or_default();
        'points: for r in rows {
            if r.ts < oldest {
                out.reject(format!("{measure}: timestamp {} is outside the group's TTL", r.ts));
                continue;
            }
            let key = TagVal::Str(series_key(&r.labels));
            let id = series_id(measure, [&key]);
            if !seen.contains(&id) {
                if seen.len() >= self.cfg.series_per_measure_max {
                    out.reject(format!("{measure}: more than {} series (limit)", self.cfg.series_per_measure_max));
                    continue;
                }
                seen.insert(id);
            }
            let mut tags = vec![TagVal::Null; layout.tags.len()];
            tags[schema.entity[0]] = key;
            for (k, v) in r.labels {
                let i = layout.tag_index(&k).expect("ensured");
                tags[i] = TagVal::Str(v);
            }
            let mut fields = vec![FieldVal::Null; layout.fields.len()];
            for (k, v) in r.fields {
                let i = layout.field_index(&k).expect("ensured");
                let want = layout.field_type(i);
                fields[i] = match (want, v) {
                    (FieldType::Float, FieldVal::Int(n)) => FieldVal::Float(n as f64),
                    (t, v) if field_type(&v) == Some(t) => v,
                    (t, v) => {
                        out.reject(format!("{measure}: field {k:?} is {}, got {}", t.as_str_name(), v.type_name()));
                        continue 'points;
                    }
                };
            }
            points.push(Point { series: id, shard: shard_of(id, schema.group.shard_num), ts: r.ts, version: 0, tags, fields });
        }
        points
    }

    /// Writes rows of one measure, creating or widening its schema first.
    pub(crate) async fn write(&self, gw: &Gateway, group: &str, measure: &str, rows: Vec<AgentRow>) -> Result<Outcome, ApiError> {
        let measure = sanitize(measure);
        let mut out = Outcome::default();
        let mut kept = Vec::with_capacity(rows.len());
        let mut tags = BTreeSet::new();
        let mut fields: BTreeMap<String, FieldType> = BTreeMap::new();
        'rows: for mut r in rows {
            if r.labels.len() > self.cfg.labels_per_series_max {
                out.reject(format!("{measure}: {} labels, the limit is {}", r.labels.len(), self.cfg.labels_per_series_max));
                continue;
            }
            for (k, v) in &mut r.labels {
                if k.len() + v.len() > self.cfg.label_bytes_max {
                    out.reject(format!("{measure}: label {k:?} longer than {} bytes", self.cfg.label_bytes_max));
                    continue 'rows;
                }
                *k = sanitize(k);
                if k == SERIES_TAG {
                    out.reject(format!("{measure}: label name {SERIES_TAG} is reserved"));
                    continue 'rows;
                }
            }
            for (k, v) in &mut r.fields {
                *k = sanitize(k);
                if let Some(t) = field_type(v)
                    && !fields.contains_key(k.as_str())
                {
                    fields.insert(k.clone(), t);
                }
            }
            for (k, _) in &r.labels {
                if !tags.contains(k) {
                    tags.insert(k.clone());
                }
            }
            kept.push(r);
        }
        if kept.is_empty() {
            return Ok(out);
        }
        let schema = self.ensure(group, &measure, &tags, &fields).await?;
        let now = canopy_model::now_nanos();
        let points = self.build_points(group, &measure, &schema, kept, now, &mut out);
        if points.is_empty() {
            return Ok(out);
        }
        let n = points.len();
        gw.store(&schema, points).await?;
        out.accepted += n;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_mangled_and_series_keys_are_canonical() {
        assert_eq!(sanitize("http.server.duration"), "http.server.duration");
        assert_eq!(sanitize("weird name/é"), "weird_name__");
        assert_eq!(sanitize(".."), "_..");
        let a = series_key(&[("b".into(), "x\"y".into()), ("a".into(), "1".into())]);
        assert_eq!(a, r#"{a="1",b="x\"y"}"#);
        assert_eq!(a, series_key(&[("a".into(), "1".into()), ("b".into(), "x\"y".into())]));
    }
}
