//! The query function run locally as on AWS Lambda: `cargo lambda watch
//! --only-lambda-apis` emulates Lambda's invoke and runtime APIs, and
//! instances of the built `canopy-lambda` bootstrap serve invocations
//! through it, reading the cluster's S3 server.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use canopy_bench::local_lambda;

use super::process::{S3_BUCKET, free_port, print_log_if_failing};
use super::wait::wait_until_blocking;

/// The `canopy-lambda` bootstrap, built beside `canopy` by a workspace build.
fn bootstrap() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_canopy")).with_file_name("canopy-lambda");
    assert!(p.exists(), "{} is missing: build the workspace (cargo nextest run --workspace)", p.display());
    p
}

/// The Lambda emulator and `instances` function processes.
pub struct LambdaEmulator {
    port: u16,
    emulator: Option<Child>,
    functions: Vec<Child>,
    instances: usize,
    dir: tempfile::TempDir,
}

impl LambdaEmulator {
    /// Starts the emulator and `instances` instances of the function, which
    /// read `s3://canopy-test` at the S3 server on `s3_port`.
    pub fn start(s3_port: u16, instances: usize) -> LambdaEmulator {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        let emulator = local_lambda::emulator_command(port)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (install: pip install cargo-lambda): {e}", local_lambda::cargo_lambda()));
        let mut l = LambdaEmulator { port, emulator: Some(emulator), functions: Vec::new(), instances, dir };
        wait_until_blocking(60, "cargo lambda watch did not start listening", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        for i in 0..instances {
            let log = std::fs::File::create(l.dir.path().join(format!("function-{i}.log"))).unwrap();
            let cache = l.dir.path().join(format!("cache-{i}"));
            let store = format!("s3://{S3_BUCKET}");
            let child = local_lambda::function_command(&bootstrap(), port, &store, &format!("http://127.0.0.1:{s3_port}"), &cache)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start canopy-lambda");
            l.functions.push(child);
        }
        l
    }

    /// The endpoint to invoke through (`--lambda-endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the emulator and the functions: invocations then fail.
    pub fn stop(&mut self) {
        for mut c in self.functions.drain(..).chain(self.emulator.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The emulator's and the functions' logs.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in std::iter::once("emulator".to_string()).chain((0..self.instances).map(|i| format!("function-{i}"))) {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))) {
                out.push_str(&format!("==== {name}\n{text}\n"));
            }
        }
        out
    }
}

impl Drop for LambdaEmulator {
    fn drop(&mut self) {
        print_log_if_failing("query function", &self.logs());
        self.stop();
    }
}
