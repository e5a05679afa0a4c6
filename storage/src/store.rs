//! Opening the object store from configuration: a local directory (the
//! standalone default) or any S3-compatible endpoint.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::{Result, StorageError};

/// Where parts and catalogs live.
#[derive(Debug, Clone, Default)]
pub struct ObjectStoreConfig {
    /// `file:///abs/dir`, a plain directory path, or `s3://bucket[/prefix]`.
    pub url: String,
    /// S3 endpoint for non-AWS servers (MinIO, s3s-fs), e.g. `http://127.0.0.1:9000`.
    pub s3_endpoint: Option<String>,
    /// Region; defaults to `AWS_REGION` or `us-east-1`.
    pub s3_region: Option<String>,
    /// Credentials; default to `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
}

impl ObjectStoreConfig {
    /// The S3 region: given, else `AWS_REGION`, else `us-east-1` (every S3
    /// client of the process uses this one).
    pub fn region(&self) -> String {
        self.s3_region.clone().or_else(|| std::env::var("AWS_REGION").ok()).unwrap_or_else(|| "us-east-1".into())
    }
}

/// Opens the configured store. Local directories are created if missing.
pub fn open_object_store(cfg: &ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = cfg.url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Config(format!("no bucket in {:?}", cfg.url)));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &cfg.s3_endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://")).with_virtual_hosted_style_request(false);
        }
        b = b.with_region(cfg.region());
        if let Some(k) = &cfg.s3_access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &cfg.s3_secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let s3 = b.build().map_err(|e| StorageError::Config(e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) });
    }
    let dir = cfg.url.strip_prefix("file://").unwrap_or(&cfg.url);
    if dir.is_empty() {
        return Err(StorageError::Config("empty object store URL".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Config(format!("creating {dir}: {e}")))?;
    // fsync parts and catalog versions: a commit must survive power loss,
    // because the WAL it covers is deleted right after.
    let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| StorageError::Config(e.to_string()))?.with_fsync(true);
    Ok(Arc::new(fs))
}

/// Proves the store decides create-if-absent (`If-None-Match: *`), which
/// catalog commits rely on: the same key created twice must fail the second
/// time. On a server that ignores the condition every commit would silently
/// become last-writer-wins — two writers could both "commit" one catalog
/// version — so a role that commits refuses to start there. Costs three
/// requests (create, create, delete) of a key under `_canopy/probe/`.
pub async fn probe_conditional_create(store: &dyn ObjectStore) -> Result<()> {
    use object_store::{ObjectStoreExt, PutMode, PutOptions};
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let key = crate::paths::probe(std::process::id(), nanos);
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    store.put_opts(&key, "create-if-absent probe".into(), create()).await?;
    let second = store.put_opts(&key, "created twice".into(), create()).await;
    if let Err(e) = store.delete(&key).await {
        tracing::warn!(%key, error = %e, "could not delete the create-if-absent probe");
    }
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Ok(_) => Err(StorageError::Config(
            "the object store ignores create-if-absent (If-None-Match: *): a second create of one key succeeded. \
             Catalog commits need it (AWS S3, MinIO and other current S3 servers decide it atomically)"
                .into(),
        )),
        Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => Err(StorageError::Config(
            "the object store does not support create-if-absent (If-None-Match: *); catalog commits need it".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
