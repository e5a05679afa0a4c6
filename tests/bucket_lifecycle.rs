//! A role that writes to S3 makes sure, at start-up, that the bucket aborts
//! incomplete multipart uploads (the compactor's large parts are multipart;
//! one that dies mid-upload leaves billed parts no listing shows): it adds
//! the rule when missing, keeps the operator's other rules, leaves a rule
//! that already does the job alone, and does nothing when told not to.

mod common;

use common::s3::Rule;
use common::*;

const RULE_ID: &str = "canopy-abort-incomplete-multipart-uploads";

fn canopy_rule(days: i32) -> Rule {
    Rule { id: Some(RULE_ID.into()), prefix: String::new(), enabled: true, abort_days: Some(days), expire_days: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_adds_the_abort_rule_keeping_the_operators_rules() {
    let mut c = Canopy::start(Backend::S3, &[]);
    let s3 = c.s3().expect("on S3");
    assert_eq!(s3.lifecycle_rules(), Some(vec![canopy_rule(7)]), "a bucket without lifecycle rules gets the default");

    // The operator's rules: one expiring scratch objects, one aborting
    // uploads under a prefix only (not the whole bucket).
    let scratch = Rule { id: Some("scratch".into()), prefix: "scratch/".into(), enabled: true, abort_days: None, expire_days: Some(1) };
    let partial = Rule { id: Some("uploads".into()), prefix: "uploads/".into(), enabled: true, abort_days: Some(1), expire_days: None };
    s3.set_lifecycle_rules(vec![scratch.clone(), partial.clone()]);
    c.stop();
    c.restart();
    let s3 = c.s3().expect("on S3");
    assert_eq!(s3.lifecycle_rules(), Some(vec![scratch.clone(), partial.clone(), canopy_rule(7)]));

    // A whole-bucket rule that already aborts within a week is enough.
    let theirs = Rule { id: Some("theirs".into()), prefix: String::new(), enabled: true, abort_days: Some(3), expire_days: None };
    s3.set_lifecycle_rules(vec![scratch.clone(), theirs.clone()]);
    c.stop();
    c.restart();
    assert_eq!(c.s3().unwrap().lifecycle_rules(), Some(vec![scratch.clone(), theirs]));

    // A disabled one is not.
    let disabled = Rule { enabled: false, id: Some("off".into()), prefix: String::new(), abort_days: Some(3), expire_days: None };
    c.s3().unwrap().set_lifecycle_rules(vec![disabled.clone()]);
    c.stop();
    c.restart();
    assert_eq!(c.s3().unwrap().lifecycle_rules(), Some(vec![disabled, canopy_rule(7)]));
    assert_eq!(Http::new(c.http).get("/api/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_period_is_an_option_and_zero_leaves_the_bucket_alone() {
    let c = Canopy::start(Backend::S3, &["--s3-abort-multipart-days", "2"]);
    assert_eq!(c.s3().unwrap().lifecycle_rules(), Some(vec![canopy_rule(2)]));
    let off = Canopy::start(Backend::S3, &["--s3-abort-multipart-days", "0"]);
    assert_eq!(off.s3().unwrap().lifecycle_rules(), None, "0 must not touch the bucket's configuration");
    assert_eq!(Http::new(off.http).get("/api/healthz").await.0, 200);
}
