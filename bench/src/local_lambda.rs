//! The query function run locally as on AWS Lambda, for the tests and the
//! benchmark alike: `cargo lambda watch --only-lambda-apis` emulates
//! Lambda's invoke and runtime APIs, and each instance of the
//! `canopy-lambda` bootstrap is started with the environment Lambda gives it.

use std::path::Path;
use std::process::Command;

use crate::s3::{S3_KEY, S3_SECRET};

/// The name the emulator gives the one function it serves.
pub const FUNCTION_NAME: &str = "_";

/// `cargo-lambda`: `CANOPY_CARGO_LAMBDA`, else on the PATH (the test
/// command installs it from PyPI).
pub fn cargo_lambda() -> String {
    std::env::var("CANOPY_CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".into())
}

/// The emulator on a loopback `port`; run it in the workspace (it reads the
/// cargo metadata).
pub fn emulator_command(port: u16) -> Command {
    let mut c = Command::new(cargo_lambda());
    c.args(["lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1", "--invoke-port", &port.to_string()]);
    c
}

/// One instance of the function, polling the emulator on `port`, reading
/// `object_store` (an `s3://` URL) at the test S3 server `s3_endpoint`, with
/// its part cache's disk tier in `cache_dir`.
pub fn function_command(bootstrap: &Path, port: u16, object_store: &str, s3_endpoint: &str, cache_dir: &Path) -> Command {
    let mut c = Command::new(bootstrap);
    c.env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("CANOPY_OBJECT_STORE", object_store)
        .env("CANOPY_S3_ENDPOINT", s3_endpoint)
        .env("CANOPY_CACHE_DIR", cache_dir)
        .env("CANOPY_CACHE_MEMORY_BYTES", (128u64 << 20).to_string())
        .env("CANOPY_CACHE_DISK_BYTES", (512u64 << 20).to_string())
        .env("CANOPY_LOG", "warn");
    c
}
