//! `canopy-lambda`: the bootstrap of the query function (`cargo lambda build
//! --release`). Configured by environment variables, as Lambda passes them:
//! `CANOPY_OBJECT_STORE` (`s3://bucket[/prefix]`), `CANOPY_S3_ENDPOINT`,
//! `CANOPY_S3_REGION` (default `AWS_REGION`), credentials from the function's
//! role (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
//! and the part cache: `CANOPY_CACHE_DIR` (default `/tmp/canopy-cache`),
//! `CANOPY_CACHE_MEMORY_BYTES` (128 MiB), `CANOPY_CACHE_DISK_BYTES` (512 MiB,
//! Lambda's default `/tmp`).

use std::sync::Arc;

use canopy_lambda::{Function, Invocation};
use canopy_querier::CacheConfig;
use canopy_storage::{ObjectStoreConfig, open_object_store};
use lambda_runtime::{LambdaEvent, service_fn};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("CANOPY_LOG").unwrap_or_else(|_| "info".into())).without_time().init();
    let url = std::env::var("CANOPY_OBJECT_STORE").map_err(|_| "CANOPY_OBJECT_STORE is required (s3://bucket[/prefix])")?;
    let store = open_object_store(&ObjectStoreConfig {
        url,
        s3_endpoint: std::env::var("CANOPY_S3_ENDPOINT").ok(),
        s3_region: std::env::var("CANOPY_S3_REGION").ok(),
        s3_access_key_id: None,
        s3_secret_access_key: None,
    })?;
    let (store, _counters) = canopy_storage::CountingStore::wrap(store);
    let cache = CacheConfig {
        memory_bytes: env_or("CANOPY_CACHE_MEMORY_BYTES", 128 << 20),
        dir: Some(env_or("CANOPY_CACHE_DIR", "/tmp/canopy-cache".to_string()).into()),
        disk_bytes: env_or("CANOPY_CACHE_DISK_BYTES", 512 << 20),
    };
    let function = Arc::new(Function::new(store, &cache).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Invocation>| {
        let function = function.clone();
        async move { function.handle(event.payload).await }
    }))
    .await
}
