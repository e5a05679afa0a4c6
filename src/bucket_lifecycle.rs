//! The bucket's lifecycle rule for incomplete multipart uploads, checked (and
//! added when missing) at start-up. The compactor writes large parts as
//! multipart uploads; one that dies mid-upload leaves parts S3 keeps — and
//! bills — until someone aborts them, and no listing of objects shows them.
//! A rule aborting incomplete uploads after a few days is the standard
//! remedy; object_store cannot read or write lifecycle configuration, so
//! this uses aws-sdk-s3. It is hygiene, not correctness: when the rule
//! cannot be read or set (no permission, a server without lifecycle
//! support), the role warns and starts.

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
};
use canopy_storage::ObjectStoreConfig;

/// The id of the rule Canopy adds.
pub(crate) const RULE_ID: &str = "canopy-abort-incomplete-multipart-uploads";

/// What start-up found or did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not an S3 store, or the check is switched off.
    NotApplicable,
    /// A whole-bucket rule already aborts uploads within the days asked for.
    Present,
    /// The rule was added (existing rules kept).
    Added,
    /// The configuration could not be read or written; why.
    Unverified(String),
}

/// Makes sure the bucket of `cfg` aborts incomplete multipart uploads after
/// at most `days` days (0: leave the bucket alone).
pub(crate) async fn ensure_abort_rule(cfg: &ObjectStoreConfig, days: i32) -> Outcome {
    let Some(rest) = cfg.url.strip_prefix("s3://") else { return Outcome::NotApplicable };
    if days <= 0 {
        return Outcome::NotApplicable;
    }
    let bucket = rest.split('/').next().unwrap_or(rest).to_string();
    let client = client(cfg).await;
    let (current, min_size) = match client.get_bucket_lifecycle_configuration().bucket(&bucket).send().await {
        Ok(out) => (out.rules.unwrap_or_default(), out.transition_default_minimum_object_size),
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("NoSuchLifecycleConfiguration") => (Vec::new(), None),
        Err(e) => return Outcome::Unverified(format!("reading: {}", aws_sdk_s3::error::DisplayErrorContext(&e))),
    };
    if current.iter().any(|r| aborts_within(r, days)) {
        return Outcome::Present;
    }
    if current.iter().any(old_format) {
        // S3 refuses a configuration mixing rule-level prefixes with filters.
        return Outcome::Unverified("the bucket's rules use the old rule-level Prefix, which cannot be mixed with a new rule".into());
    }
    let rule = LifecycleRule::builder()
        .id(RULE_ID)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build())
        .build()
        .expect("status is set");
    // Replace a Canopy rule with another period; keep every other rule.
    let mut rules: Vec<LifecycleRule> = current.into_iter().filter(|r| r.id() != Some(RULE_ID)).collect();
    rules.push(rule);
    let config = BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().expect("rules are set");
    // A PUT replaces the whole configuration: carry the bucket-wide setting over too.
    let put = client.put_bucket_lifecycle_configuration().bucket(&bucket).lifecycle_configuration(config);
    match put.set_transition_default_minimum_object_size(min_size).send().await {
        Ok(_) => Outcome::Added,
        Err(e) => Outcome::Unverified(format!("adding the rule: {}", aws_sdk_s3::error::DisplayErrorContext(&e))),
    }
}

/// True if `r` is written in the format from before `Filter` existed: its
/// prefix on the rule itself (deprecated in the API, still returned).
#[allow(deprecated)]
fn old_format(r: &LifecycleRule) -> bool {
    r.filter().is_none() && r.prefix().is_some()
}

/// True if `r` is an enabled whole-bucket rule aborting uploads within `days`.
#[allow(deprecated)]
fn aborts_within(r: &LifecycleRule, days: i32) -> bool {
    let whole_bucket = match r.filter() {
        None => r.prefix().is_none_or(str::is_empty),
        Some(f) => {
            f.prefix().is_none_or(str::is_empty)
                && f.tag().is_none()
                && f.and().is_none()
                && f.object_size_greater_than().is_none()
                && f.object_size_less_than().is_none()
        }
    };
    let within = r.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation()).is_some_and(|d| d <= days);
    r.status() == &ExpirationStatus::Enabled && whole_bucket && within
}

/// An S3 client for the store's endpoint, region and credentials (those
/// given, else the usual AWS chain).
async fn client(cfg: &ObjectStoreConfig) -> aws_sdk_s3::Client {
    // The object store's region: no probing of profiles or IMDS for it.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(cfg.region()));
    if let (Some(k), Some(s)) = (&cfg.s3_access_key_id, &cfg.s3_secret_access_key) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(k, s, None, None, "canopy options"));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(e) = &cfg.s3_endpoint {
        // MinIO and other S3 servers: path-style, like the object store.
        b = b.endpoint_url(e).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}
