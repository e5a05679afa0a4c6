//! Schema fixtures for tests across the workspace (feature `testsuite`).

use std::sync::Arc;

use canopy_api::v1::*;

use crate::schema::{GroupSpec, MeasureSchema};

/// A measure group with one-hour (or `segment_hours`) segments.
pub fn group(name: &str, shard_num: u32, segment_hours: u32, ttl_days: u32) -> Group {
    Group {
        metadata: Some(Metadata { name: name.into(), ..Default::default() }),
        catalog: Catalog::Measure as i32,
        resource_opts: Some(ResourceOpts {
            shard_num,
            segment_interval: Some(IntervalRule { unit: interval_rule::Unit::Hour as i32, num: segment_hours }),
            ttl: Some(IntervalRule { unit: interval_rule::Unit::Day as i32, num: ttl_days }),
        }),
        updated_at: None,
    }
}

/// A measure with one tag family `d`.
pub fn measure(group: &str, name: &str, tags: &[(&str, TagType)], fields: &[(&str, FieldType)], entity: &[&str]) -> Measure {
    Measure {
        metadata: Some(Metadata { group: group.into(), name: name.into(), mod_revision: 1 }),
        tag_families: vec![TagFamilySpec {
            name: "d".into(),
            tags: tags.iter().map(|(n, t)| TagSpec { name: n.to_string(), r#type: *t as i32 }).collect(),
        }],
        fields: fields.iter().map(|(n, t)| FieldSpec { name: n.to_string(), field_type: *t as i32 }).collect(),
        entity: Some(Entity { tag_names: entity.iter().map(|e| e.to_string()).collect() }),
        interval: String::new(),
        updated_at: None,
        tags_follow_entity: false,
    }
}

/// Compiles a group and measure fixture.
pub fn compile(group: &Group, measure: &Measure) -> MeasureSchema {
    MeasureSchema::compile(Arc::new(GroupSpec::compile(group).expect("valid group")), measure).expect("valid measure")
}

/// A seed for a randomized test, printed so a failure can be replayed:
/// `CANOPY_TEST_SEED=<seed>` replays that run, else the clock picks one.
pub fn seed() -> u64 {
    let seed = std::env::var("CANOPY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(crate::now_nanos() as u64 | 1);
    println!("seed {seed} (CANOPY_TEST_SEED={seed} replays this run)");
    seed
}
