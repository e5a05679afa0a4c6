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
use canopy_model::{ColumnLayout, FieldVal, FieldVals, MeasureSchema, Point, TagVal, Tags, series_id, shard_of};

use super::known_series::{KnownSeries, PreparedLabels};
use super::label_sets::LabelSets;
use super::measure_rows::{AgentRow, MeasureRows};
use crate::error::{ApiError, Code};
use crate::service::Gateway;

/// The entity tag of agent measures.
pub(crate) const SERIES_TAG: &str = "__series__";
/// The tag family of agent measures.
pub(crate) const LABELS_FAMILY: &str = "labels";
/// Rounds of read / create-or-widen / re-read before a write gives up on a
/// schema that concurrent writers keep changing.
const ENSURE_ATTEMPTS: usize = 8;

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
    /// Most samples (points) one request may carry.
    pub samples_per_request_max: usize,
    /// Most bytes one request may expand to once every sample carries its
    /// series' labels (counted before expanding; see [`ExpansionBudget`]).
    pub expanded_bytes_max: usize,
    /// Most samples one remote-read request may return.
    pub read_samples_max: usize,
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
            samples_per_request_max: 200_000,
            expanded_bytes_max: 128 << 20,
            read_samples_max: 5_000_000,
        }
    }
}

/// A series' labels (any order), shared by all the samples of the series
/// in a request: decoders allocate them once per series, not per sample.
pub(crate) type Labels = Arc<Vec<(String, String)>>;

/// The field names of agent rows (any order), shared by the rows that name
/// the same fields in the same order: a request's lines of one measurement,
/// every sample of a remote-write request.
pub(crate) type FieldNames = Arc<[String]>;

/// An agent row's field values: one inline (a Prometheus or OTLP sample),
/// so a sample costs no allocation of its own.
pub(crate) type RowValues = smallvec::SmallVec<[FieldVal; 1]>;

/// The rows of measure `name` in a request's map, the name copied only the
/// first time it appears (decoders borrow names from the body).
pub(crate) fn rows_of<'m, T: Default>(by_measure: &'m mut BTreeMap<String, T>, name: &str) -> &'m mut T {
    if !by_measure.contains_key(name) {
        by_measure.insert(name.to_string(), T::default());
    }
    by_measure.get_mut(name).expect("inserted above")
}

/// Bytes a stored agent point costs beyond its labels (timestamps, ids, vectors).
const POINT_OVERHEAD_BYTES: usize = 96;

/// What a request will expand to, counted while decoding and before any
/// sample is expanded into a point: a small body can name one series with
/// kilobytes of labels and a million samples, and every point carries its
/// labels twice (the series key and one tag per label).
#[derive(Debug)]
pub(crate) struct ExpansionBudget {
    samples: usize,
    bytes: usize,
    samples_max: usize,
    bytes_max: usize,
}

impl ExpansionBudget {
    /// An empty budget under the configured limits.
    pub(crate) fn new(cfg: &AgentConfig) -> ExpansionBudget {
        ExpansionBudget { samples: 0, bytes: 0, samples_max: cfg.samples_per_request_max, bytes_max: cfg.expanded_bytes_max }
    }

    /// Counts `samples` points of a series whose labels take `label_bytes`;
    /// fails (400 naming the limit) once the request is over a limit.
    pub(crate) fn charge(&mut self, samples: usize, label_bytes: usize) -> Result<(), ApiError> {
        self.samples = self.samples.saturating_add(samples);
        let per_point = label_bytes.saturating_mul(2).saturating_add(POINT_OVERHEAD_BYTES);
        self.bytes = self.bytes.saturating_add(samples.saturating_mul(per_point));
        if self.samples > self.samples_max {
            return Err(ApiError::invalid(
                "body",
                format!("more than {} samples in one request (limit agent-samples-max); send smaller batches", self.samples_max),
            ));
        }
        if self.bytes > self.bytes_max {
            return Err(ApiError::invalid(
                "body",
                format!(
                    "the request expands to more than {} bytes of points (limit agent-expanded-bytes-max); send smaller batches or fewer labels",
                    self.bytes_max
                ),
            ));
        }
        Ok(())
    }
}

/// Bytes of a label set's names and values.
pub(crate) fn label_bytes<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    labels.into_iter().map(|(k, v)| k.len() + v.len()).sum()
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
    pub(crate) fn reject(&mut self, why: String) {
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
    by_measure: impl IntoIterator<Item = (String, MeasureRows)>,
) -> Result<Outcome, ApiError> {
    let writes = by_measure.into_iter().map(|(measure, rows)| async move { gw.agents.write(gw, group, &measure, rows).await });
    let mut outcome = Outcome::default();
    for r in futures::future::join_all(writes).await {
        outcome.merge(r?);
    }
    Ok(outcome)
}

/// What every point of a series shares: its tags, id and shard.
type SeriesPoint = (Tags, u64, u32);

/// Makes `v` a value of type `want` (an integer is a valid float), or says
/// why it is not one.
fn coerce(want: FieldType, v: &mut FieldVal) -> Result<(), String> {
    match (want, &*v) {
        (FieldType::Float, FieldVal::Int(n)) => *v = FieldVal::Float(*n as f64),
        (t, x) if field_type(x) == Some(t) => {}
        (t, x) => return Err(format!("is {}, got {}", t.as_str_name(), x.type_name())),
    }
    Ok(())
}

/// Mangles a name into one Canopy accepts.
pub(crate) fn sanitize(name: &str) -> String {
    if canopy_model::check_name(name, "name").is_ok() {
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
    /// Series seen before, so a known one is not rebuilt per sample.
    known: KnownSeries,
    /// Label sets seen before, for decoders that borrow from the body.
    pub(crate) label_sets: LabelSets,
}

impl AutoSchema {
    pub(crate) fn new(registry: Arc<SchemaRegistry>, cfg: AgentConfig) -> AutoSchema {
        AutoSchema {
            registry,
            cfg,
            series: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            known: KnownSeries::default(),
            label_sets: LabelSets::default(),
        }
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
        // Another gateway (or process) may create or widen the same measure
        // at the same time: every step tolerates losing that race, and the
        // loop ends only when the stored schema covers this request.
        for _ in 0..ENSURE_ATTEMPTS {
            self.ensure_group(group).await?;
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
                    // What is missing is judged on the measure as just read,
                    // not on a cached schema.
                    let have = canopy_model::ColumnLayout::of(&m);
                    let read_revision = m.metadata.as_ref().map_or(0, |md| md.mod_revision);
                    let mut changed = false;
                    for t in tags.iter().filter(|t| have.tag_index(t).is_none()) {
                        m.tag_families[0].tags.push(spec(t));
                        changed = true;
                    }
                    for (f, ty) in fields.iter().filter(|(f, _)| have.field_index(f).is_none()) {
                        m.fields.push(FieldSpec { name: f.clone(), field_type: *ty as i32 });
                        changed = true;
                    }
                    if changed {
                        match self.registry.extend_measure(m, read_revision).await {
                            Ok(_) | Err(MetaError::Conflict(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            self.registry.forget_measure(group, measure);
            let s = self.registry.measure_schema(group, measure).await?;
            if Self::covers(&s, tags, fields) {
                return Ok(s);
            }
        }
        Err(ApiError::new(
            Code::Unavailable,
            format!("the schema of {group}/{measure} kept changing under concurrent writers; retry the request"),
        ))
    }

    /// Creates the agents' group if it does not exist yet (losing that race is fine).
    async fn ensure_group(&self, group: &str) -> Result<(), ApiError> {
        match self.registry.get_group(group).await {
            Ok(_) => Ok(()),
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
                    Ok(()) | Err(MetaError::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks and renames one label set, once for all its samples.
    fn prepare(&self, measure: &str, labels: &Labels) -> Result<PreparedLabels, String> {
        if labels.len() > self.cfg.labels_per_series_max {
            return Err(format!("{measure}: {} labels, the limit is {}", labels.len(), self.cfg.labels_per_series_max));
        }
        let mut out = Vec::with_capacity(labels.len());
        for (k, v) in labels.iter() {
            if k.len() + v.len() > self.cfg.label_bytes_max {
                return Err(format!("{measure}: label {k:?} longer than {} bytes", self.cfg.label_bytes_max));
            }
            let k = sanitize(k);
            if k == SERIES_TAG {
                return Err(format!("{measure}: label name {SERIES_TAG} is reserved"));
            }
            out.push((k, v.clone()));
        }
        let key = series_key(&out);
        let id = series_id(measure, [&TagVal::Str(key.clone())]);
        Ok(PreparedLabels::new(labels.clone(), out, key, id))
    }

    /// The tag values of a label set in the schema's layout (the entity
    /// first), built once per series; the reason if the series is over the
    /// series limit or a label is missing from the schema.
    fn series_tags(&self, group: &str, measure: &str, schema: &MeasureSchema, p: &PreparedLabels) -> Result<Tags, String> {
        let layout = &schema.layout;
        {
            let mut series = self.series.lock().expect("series lock");
            let seen = series.entry((group.to_string(), measure.to_string())).or_default();
            if !seen.contains(&p.id) {
                if seen.len() >= self.cfg.series_per_measure_max {
                    return Err(format!("{measure}: more than {} series (limit)", self.cfg.series_per_measure_max));
                }
                seen.insert(p.id);
            }
        }
        let mut tags = vec![TagVal::Null; layout.tags.len()];
        tags[schema.entity[0]] = TagVal::Str(p.key.clone());
        for (k, v) in &p.labels {
            // `ensure` returned a schema covering every label; should that
            // ever not hold, reject the point, never panic.
            let i = layout.tag_index(k).ok_or_else(|| format!("{measure}: label {k:?} is not in the schema"))?;
            tags[i] = TagVal::Str(v.clone());
        }
        Ok(tags.into())
    }

    /// Turns rows into points in the schema's layout, one batch per shard —
    /// validated here, so they go straight to the data plane: the series
    /// limit, field types and the group's TTL are checked.
    #[allow(clippy::too_many_arguments)]
    fn build_points(
        &self,
        group: &str,
        measure: &str,
        schema: &MeasureSchema,
        names: &[FieldNames],
        series: &[Result<Arc<PreparedLabels>, String>],
        rows: Vec<AgentRow>,
        out: &mut Outcome,
    ) -> Vec<Vec<Point>> {
        let layout = &schema.layout;
        let now = canopy_model::now_nanos();
        let oldest = now.saturating_sub(schema.group.ttl_nanos);
        let shards = schema.group.shard_num.max(1) as usize;
        // Each sized on first use for an even spread (series hash to shards
        // uniformly), with a little room before it grows.
        let per_shard = rows.len() / shards * 9 / 8 + 8;
        let mut points: Vec<Vec<Point>> = (0..shards).map(|_| Vec::new()).collect();
        // Each list of field names mapped onto the layout once.
        let slots: Vec<Vec<Option<usize>>> = names.iter().map(|n| n.iter().map(|k| layout.field_index(k)).collect()).collect();
        // Lists naming every field of the layout in its order: their rows'
        // values are the point's as they are.
        let in_order: Vec<bool> =
            slots.iter().map(|s| s.len() == layout.fields.len() && s.iter().enumerate().all(|(i, &slot)| slot == Some(i))).collect();
        // Each series' tags, id and shard, looked up once per request.
        let mut built: Vec<Option<Result<SeriesPoint, String>>> = (0..series.len()).map(|_| None).collect();
        'points: for r in rows {
            if r.ts < oldest {
                out.reject(format!("{measure}: timestamp {} is outside the group's TTL", r.ts));
                continue;
            }
            let s = r.series as usize;
            let b = built[s].get_or_insert_with(|| {
                let prepared = series[s].as_ref().map_err(Clone::clone)?;
                let tags = prepared.tags_for(layout, || self.series_tags(group, measure, schema, prepared))?;
                Ok((tags, prepared.id, shard_of(prepared.id, schema.group.shard_num)))
            });
            let (tags, id, shard) = match b {
                Ok(b) => b,
                Err(why) => {
                    out.reject(why.clone());
                    continue;
                }
            };
            let at = r.names as usize;
            let fields = if in_order[at] {
                // Checked where they are (every sample of a Prometheus metric).
                let mut values = r.values;
                for (i, v) in values.iter_mut().enumerate() {
                    if let Err(why) = coerce(layout.field_type(i), v) {
                        out.reject(format!("{measure}: field {:?} {why}", names[at][i]));
                        continue 'points;
                    }
                }
                values
            } else {
                let mut fields = FieldVals::from_elem(FieldVal::Null, layout.fields.len());
                for ((k, slot), mut v) in names[at].iter().zip(&slots[at]).zip(r.values) {
                    let Some(i) = *slot else {
                        out.reject(format!("{measure}: field {k:?} is not in the schema"));
                        continue 'points;
                    };
                    if let Err(why) = coerce(layout.field_type(i), &mut v) {
                        out.reject(format!("{measure}: field {k:?} {why}"));
                        continue 'points;
                    }
                    fields[i] = v;
                }
                fields
            };
            let batch = &mut points[*shard as usize];
            if batch.capacity() == 0 {
                batch.reserve(per_shard);
            }
            batch.push(Point { series: *id, shard: *shard, ts: r.ts, version: 0, tags: tags.clone(), fields });
        }
        points
    }

    /// Writes rows of one measure, creating or widening its schema first.
    pub(crate) async fn write(&self, gw: &Gateway, group: &str, measure: &str, mut rows: MeasureRows) -> Result<Outcome, ApiError> {
        let measure = sanitize(measure);
        // Series whose tags are built for the current layout have every
        // label in the schema already: only the others are looked at.
        let current = self.registry.measure_schema(group, &measure).await.ok().map(|s| s.layout.clone());
        let Prepared { series, names, tags, fields, mut out } = self.prepare_rows(group, &measure, current.as_ref(), &mut rows);
        if rows.rows.is_empty() {
            return Ok(out);
        }
        let schema = self.ensure(group, &measure, &tags, &fields).await?;
        let batches = self.build_points(group, &measure, &schema, &names, &series, rows.rows, &mut out);
        let n: usize = batches.iter().map(Vec::len).sum();
        if n == 0 {
            return Ok(out);
        }
        gw.store_sharded(&schema, batches).await?;
        out.accepted += n;
        Ok(out)
    }

    /// Each series of the rows prepared, the field names sanitised, and the
    /// labels and fields the schema must have (labels of series already
    /// built for `current` are in it). Rows that cannot be stored are
    /// counted as rejected and dropped from `rows`.
    fn prepare_rows(&self, group: &str, measure: &str, current: Option<&Arc<ColumnLayout>>, rows: &mut MeasureRows) -> Prepared {
        let mut p = Prepared {
            series: Vec::with_capacity(rows.series.len()),
            names: Vec::with_capacity(rows.names.len()),
            tags: BTreeSet::new(),
            fields: BTreeMap::new(),
            out: Outcome::default(),
        };
        // Only series with rows are prepared: one whose samples were all
        // dropped must neither take a cache entry nor widen the schema.
        let mut used = vec![false; rows.series.len()];
        for r in &rows.rows {
            used[r.series as usize] = true;
        }
        {
            // Held while the request's distinct series are looked up.
            let mut known = self.known.measure(group, measure);
            for (labels, used) in rows.series.iter().zip(used) {
                if !used {
                    // Never read: no row names it.
                    p.series.push(Err(String::new()));
                    continue;
                }
                let series = known.get_or_prepare(labels, || self.prepare(measure, labels));
                if let Ok(s) = &series
                    && !current.is_some_and(|l| s.has_tags_for(l))
                {
                    for (k, _) in &s.labels {
                        if !p.tags.contains(k) {
                            p.tags.insert(k.clone());
                        }
                    }
                }
                p.series.push(series);
            }
        }
        p.names = rows.names.iter().map(|n| n.iter().map(|k| sanitize(k)).collect()).collect();
        // Per list, which fields have had their type registered.
        let mut registered: Vec<Vec<bool>> = rows.names.iter().map(|n| vec![false; n.len()]).collect();
        let MeasureRows { names, rows: list, .. } = rows;
        list.retain(|r| {
            if let Err(why) = &p.series[r.series as usize] {
                p.out.reject(why.clone());
                return false;
            }
            let at = r.names as usize;
            if r.values.len() != names[at].len() {
                p.out.reject(format!("{measure}: a row with {} values for {} field names", r.values.len(), names[at].len()));
                return false;
            }
            // A field's type is registered by the first value that has one;
            // values that conflict with the schema are rejected when stored.
            for (i, v) in r.values.iter().enumerate() {
                if !registered[at][i]
                    && let Some(t) = field_type(v)
                {
                    let k = &p.names[at][i];
                    if !p.fields.contains_key(k.as_str()) {
                        p.fields.insert(k.clone(), t);
                    }
                    registered[at][i] = true;
                }
            }
            true
        });
        p
    }
}

/// A request's rows of one measure, prepared for the schema check.
struct Prepared {
    /// Each distinct series of the rows, prepared (or why it is refused).
    series: Vec<Result<Arc<PreparedLabels>, String>>,
    /// Each distinct list of field names, sanitised.
    names: Vec<FieldNames>,
    tags: BTreeSet<String>,
    fields: BTreeMap<String, FieldType>,
    out: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(labels: &[(&str, &str)]) -> MeasureRows {
        let labels = Arc::new(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let mut rows = MeasureRows::default();
        rows.push(&labels, &FieldNames::from(["value".to_string()]), smallvec::smallvec![FieldVal::Float(1.0)], canopy_model::now_nanos());
        rows
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_writes_of_a_new_metric_through_two_gateways_both_land() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = crate::agents::test_support::two_gateways(dir.path()).await;
        for round in 0..20 {
            let metric = format!("m{round}");
            // Disjoint labels: whichever gateway creates the measure, the
            // other one must widen it, not assume its own labels are there.
            // On two worker threads, so the two gateways really race.
            let write = |gw: &Gateway, labels: &'static [(&'static str, &'static str)]| {
                let (gw, metric) = (gw.clone(), metric.clone());
                tokio::spawn(async move { gw.agents.write(&gw, "prometheus", &metric, row(labels)).await })
            };
            let (ta, tb) = (write(&a, &[("from_a", "1"), ("both", "x")]), write(&b, &[("from_b", "2"), ("both", "y")]));
            let (ra, rb) = (ta.await.expect("gateway a panicked").unwrap(), tb.await.expect("gateway b panicked").unwrap());
            assert_eq!(
                (ra.accepted, ra.rejected, rb.accepted, rb.rejected),
                (1, 0, 1, 0),
                "round {round}: {:?} {:?}",
                ra.reasons,
                rb.reasons
            );
            let m = a.registry.get_measure("prometheus", &metric).await.unwrap();
            let layout = canopy_model::ColumnLayout::of(&m);
            for t in ["from_a", "from_b", "both"] {
                assert!(layout.tag_index(t).is_some(), "round {round}: tag {t} missing from {m:?}");
            }
        }
        // Both gateways still serve agent writes afterwards (no poisoned lock).
        for gw in [&a, &b] {
            let r = gw.agents.write(gw, "prometheus", "after", row(&[("k", "v")])).await.unwrap();
            assert_eq!(r.accepted, 1);
        }
    }

    #[tokio::test]
    async fn values_of_another_type_are_rejected_naming_the_field_and_ints_fill_float_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (gw, _) = crate::agents::test_support::two_gateways(dir.path()).await;
        let labels: Labels = Arc::new(vec![("host".into(), "a".into())]);
        let write = |names: &[&str], values: Vec<FieldVal>| {
            let names: FieldNames = names.iter().map(|n| n.to_string()).collect();
            let mut rows = MeasureRows::default();
            rows.push(&labels, &names, values.into(), canopy_model::now_nanos());
            let gw = gw.clone();
            async move { gw.agents.write(&gw, "prometheus", "typed", rows).await.unwrap() }
        };
        let s = |v: &str| FieldVal::Str(v.into());
        assert_eq!(write(&["v", "w"], vec![FieldVal::Float(1.5), s("x")]).await.accepted, 1);
        // In the layout's order (values checked where they are), then in another.
        for names in [["v", "w"], ["w", "v"]] {
            let (v, w) = (names.iter().position(|n| *n == "v").unwrap(), names.iter().position(|n| *n == "w").unwrap());
            let mut values = vec![FieldVal::Null, FieldVal::Null];
            (values[v], values[w]) = (FieldVal::Int(2), s("y"));
            let ok = write(&names, values.clone()).await;
            assert_eq!((ok.accepted, ok.rejected), (1, 0), "{names:?}: an int is a valid float: {:?}", ok.reasons);
            values[v] = s("z");
            let bad = write(&names, values).await;
            assert_eq!((bad.accepted, bad.rejected), (0, 1), "{names:?}");
            assert!(bad.reasons[0].contains(r#"field "v" is FIELD_TYPE_FLOAT, got"#), "{names:?}: {:?}", bad.reasons);
        }
        let schema = gw.registry.measure_schema("prometheus", "typed").await.unwrap();
        assert_eq!(schema.layout.field_type(schema.layout.field_index("v").unwrap()), FieldType::Float);
    }

    #[tokio::test]
    async fn a_series_without_rows_is_not_prepared_and_does_not_widen_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let (gw, _) = crate::agents::test_support::two_gateways(dir.path()).await;
        let with: Labels = Arc::new(vec![("host".into(), "a".into())]);
        let without: Labels = Arc::new(vec![("only_here".into(), "x".into())]);
        let mut rows = MeasureRows::default();
        // Seen in the request, every sample of it dropped before a row.
        rows.series_index(&without);
        rows.push(&with, &FieldNames::from(["value".to_string()]), smallvec::smallvec![FieldVal::Float(1.0)], canopy_model::now_nanos());
        let out = gw.agents.write(&gw, "prometheus", "sparse", rows).await.unwrap();
        assert_eq!((out.accepted, out.rejected), (1, 0));
        let schema = gw.registry.measure_schema("prometheus", "sparse").await.unwrap();
        assert!(schema.layout.tag_index("host").is_some());
        assert!(schema.layout.tag_index("only_here").is_none(), "{:?}", schema.layout.tags);
    }

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
