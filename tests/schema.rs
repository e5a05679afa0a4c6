//! Schema registry over HTTP, and schema evolution: after a measure gains a
//! tag and a field, points written before (in parts and in the WAL) read
//! back with nulls for the new columns; incompatible changes are refused.

mod common;

use canopy_api::v1::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn registry_crud_and_compatible_evolution() {
    let mut c = Canopy::start(Backend::Local, &[]);
    let http = Http::new(c.http);
    create_schema(&http).await;

    let (s, b) = http.get("/api/v1/group/schema/g").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["group"]["resourceOpts"]["shardNum"], 3);
    let (s, b) = http.get("/api/v1/group/schema/lists").await;
    assert_eq!((s, b["group"].as_array().unwrap().len()), (200, 1));
    let (s, b) = http.get("/api/v1/measure/schema/lists/g").await;
    assert_eq!((s, b["measure"][0]["metadata"]["name"].as_str()), (200, Some("cpu")));
    let (s, _) = http
        .post(
            "/api/v1/group/schema",
            &json!({"group": {"metadata": {"name": "g"}, "catalog": "CATALOG_MEASURE",
        "resourceOpts": {"shardNum": 3, "segmentInterval": {"unit": "UNIT_HOUR", "num": 1}, "ttl": {"unit": "UNIT_DAY", "num": 7}}}}),
        )
        .await;
    assert_eq!(s, 409, "creating an existing group conflicts");

    let now = now_nanos();
    let flushed = samples(3, 4, now - HOUR, 1_000_000_000, 1);
    let wal_only = samples(3, 4, now - HOUR / 2, 1_000_000_000, 2);
    http.write_ok(&write_request(&flushed, 1)).await;
    http.flush().await;
    http.write_ok(&write_request(&wal_only, 2)).await;

    // Add tag "rack" to family "default" (before family "extra"'s tags in
    // the flattened layout) and field "temp".
    let (_, b) = http.get("/api/v1/measure/schema/g/cpu").await;
    let mut m = b["measure"].clone();
    m["tagFamilies"][0]["tags"].as_array_mut().unwrap().push(json!({"name": "rack", "type": "TAG_TYPE_STRING"}));
    m["fields"].as_array_mut().unwrap().push(json!({"name": "temp", "fieldType": "FIELD_TYPE_FLOAT"}));
    let (s, b) = http.post_raw("/api/v1/measure/schema/g/cpu", String::new()).await;
    assert_eq!(s, 405, "{b}");
    let (s, b) = http.put("/api/v1/measure/schema/g/cpu", &json!({"measure": m})).await;
    assert_eq!(s, 200, "{b}");

    // Incompatible changes are refused with the field named.
    let mut retyped = m.clone();
    retyped["fields"][0]["fieldType"] = json!("FIELD_TYPE_INT");
    let (s, b) = http.put("/api/v1/measure/schema/g/cpu", &json!({"measure": retyped})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("usage"), "{b}");

    // A point written with the new columns.
    let new = Sample {
        host: "host-000".into(),
        region: "eu".into(),
        zone: "z9".into(),
        ts: now - 60_000_000_000,
        version: 0,
        usage: 1.0,
        count: 1,
    };
    let mut req = write_request(std::slice::from_ref(&new), 3);
    let p = &mut req.data_points[0];
    p.tag_families[0].tags.push(tag_str("r1"));
    p.fields.push(FieldValue { value: Some(field_value::Value::Float(Float { value: 36.6 })) });
    http.write_ok(&req).await;

    // Also across a crash, so the old-layout WAL records are replayed.
    c.kill9();
    c.restart();
    let http = Http::new(c.http);
    let q = QueryRequest {
        groups: vec![GROUP.into()],
        name: MEASURE.into(),
        time_range: time_range(now - 2 * HOUR, now + HOUR),
        tag_projection: Some(TagProjection {
            tag_families: vec![
                tag_projection::TagFamily { name: "default".into(), tags: vec!["host".into(), "rack".into(), "region".into()] },
                tag_projection::TagFamily { name: "extra".into(), tags: vec!["zone".into()] },
            ],
        }),
        field_projection: Some(FieldProjection { names: vec!["usage".into(), "temp".into(), "count".into()] }),
        limit: 1000,
        ..Default::default()
    };
    let written: std::collections::HashMap<(String, i64), &Sample> =
        flushed.iter().chain(&wal_only).map(|s| ((s.host.clone(), s.ts), s)).collect();
    let got = http.query(&q).await;
    assert_eq!(got.data_points.len(), flushed.len() + wal_only.len() + 1);
    for dp in &got.data_points {
        let rack = &dp.tag_families[0].tags[1].value.as_ref().unwrap().value;
        let temp = &dp.fields[1].value.as_ref().unwrap().value;
        if nanos_of(dp) == new.ts && tag_of(dp, "host") == "host-000" {
            assert_eq!(tag_of(dp, "rack"), "r1");
            assert_eq!(field_of(dp, "temp"), 36.6);
        } else {
            assert!(matches!(rack, Some(tag_value::Value::Null(_))), "old points read the new tag as null: {dp:?}");
            assert!(matches!(temp, Some(field_value::Value::Null(_))), "old points read the new field as null: {dp:?}");
            // Every old column keeps its own value: a shifted column would
            // read a neighbour's.
            let sent = written.get(&(tag_of(dp, "host"), nanos_of(dp))).unwrap_or_else(|| panic!("a point nobody wrote: {dp:?}"));
            assert_eq!(
                (tag_of(dp, "region"), tag_of(dp, "zone"), field_of(dp, "usage"), field_of(dp, "count") as i64),
                (sent.region.clone(), sent.zone.clone(), sent.usage, sent.count),
                "{dp:?}"
            );
        }
    }

    // A group with measures cannot be deleted; after deleting the measure it can.
    assert_eq!(http.delete("/api/v1/group/schema/g").await.0, 412);
    assert_eq!(http.delete("/api/v1/measure/schema/g/cpu").await.0, 200);
    assert_eq!(http.delete("/api/v1/group/schema/g").await.0, 200);
    let (s, _) = http.get("/api/v1/group/schema/g").await;
    assert_eq!(s, 404);
}
