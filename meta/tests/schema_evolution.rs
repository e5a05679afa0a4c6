//! Schema updates only add: every refused change is refused with an
//! INVALID_ARGUMENT naming what it would have broken, and leaves the stored
//! schema as it was.

use std::sync::Arc;

use canopy_api::v1::{Measure, TagFamilySpec, TagSpec, TagType};
use canopy_meta::{EmbeddedStore, MetaError, SchemaRegistry};
use canopy_model::testing;

fn measure() -> Measure {
    let mut m = testing::measure(
        "g",
        "m",
        &[("s", TagType::Int), ("z", TagType::String)],
        &[("v", canopy_api::v1::FieldType::Int), ("w", canopy_api::v1::FieldType::Float)],
        &["s"],
    );
    m.tag_families.push(TagFamilySpec { name: "e".into(), tags: vec![TagSpec { name: "y".into(), r#type: TagType::String as i32 }] });
    m
}

async fn refused(reg: &SchemaRegistry, m: Measure, want: &[&str]) {
    match reg.update_measure(m).await {
        Err(MetaError::Invalid(e)) => {
            let text = e.to_string();
            assert!(want.iter().all(|w| text.contains(w)), "{text:?} should name {want:?}");
        }
        other => panic!("expected INVALID_ARGUMENT naming {want:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn incompatible_changes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = SchemaRegistry::new(Arc::new(EmbeddedStore::open(dir.path()).unwrap()));
    reg.create_group(testing::group("g", 2, 1, 7)).await.unwrap();
    reg.create_measure(measure()).await.unwrap();

    // The group: shard count and catalog are fixed; the TTL may change.
    let mut more_shards = testing::group("g", 3, 1, 7);
    match reg.update_group(more_shards.clone()).await {
        Err(MetaError::Invalid(e)) => assert!(e.to_string().contains("shard_num"), "{e}"),
        other => panic!("{other:?}"),
    }
    more_shards.resource_opts.as_mut().unwrap().shard_num = 2;
    more_shards.resource_opts.as_mut().unwrap().ttl.as_mut().unwrap().num = 30;
    reg.update_group(more_shards).await.unwrap();

    let mut no_tag = measure();
    no_tag.tag_families[0].tags.retain(|t| t.name != "z");
    refused(&reg, no_tag, &["\"z\"", "cannot be removed"]).await;
    let mut no_field = measure();
    no_field.fields.retain(|f| f.name != "w");
    refused(&reg, no_field, &["\"w\"", "cannot be removed"]).await;
    let mut retyped = measure();
    retyped.fields[0].field_type = canopy_api::v1::FieldType::Float as i32;
    refused(&reg, retyped, &["\"v\"", "cannot change type"]).await;
    let mut other_entity = measure();
    other_entity.entity.as_mut().unwrap().tag_names = vec!["z".into()];
    refused(&reg, other_entity, &["measure.entity"]).await;
    let mut moved = measure();
    let y = moved.tag_families.remove(1).tags.remove(0);
    moved.tag_families[0].tags.push(y);
    refused(&reg, moved, &["\"y\"", "family"]).await;
    let mut follow = measure();
    follow.tags_follow_entity = true;
    refused(&reg, follow, &["tags_follow_entity"]).await;

    // Nothing changed; an addition is accepted.
    let stored = reg.get_measure("g", "m").await.unwrap();
    assert_eq!((stored.tag_families.clone(), stored.fields.clone(), stored.entity.clone()), {
        let m = measure();
        (m.tag_families, m.fields, m.entity)
    });
    let mut added = measure();
    added.tag_families[1].tags.push(TagSpec { name: "x".into(), r#type: TagType::Int as i32 });
    reg.update_measure(added).await.unwrap();
    assert_eq!(reg.measure_schema("g", "m").await.unwrap().layout.tag_index("x"), Some(3), "s, z, y, then x");
}
