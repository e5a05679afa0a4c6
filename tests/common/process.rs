//! Child processes: Canopy standalone (on local disk or the test S3 server).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

pub use super::s3::{S3_BUCKET, S3_KEY, S3_SECRET, S3Server};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where parts and catalogs go in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The standalone default: a local directory.
    Local,
    /// A real S3 server (s3s-fs, see `s3.rs`) on loopback.
    S3,
}

/// First port of the range test processes draw from: below Linux's
/// ephemeral range (32768 and up, where the kernel picks ports for `:0`
/// binds and outgoing connections), so nothing else is handed these.
const PORT_BASE: u16 = 20_000;
/// Ports in one block; a test process claims whole blocks.
const BLOCK_PORTS: u16 = 32;
/// Blocks in the range (20000..32160).
const BLOCKS: u32 = 380;

/// A loopback port for a child process to bind, never handed out twice on
/// this machine while the test process lives. Each test process claims
/// blocks of ports by holding an exclusive lock on a file per block (the
/// lock goes with the process, however it ends), so two tests running at
/// once never draw the same port — not even while a killed node's port is
/// unbound, waiting for the node's restart. Each port is also checked free
/// (something outside the tests could hold it).
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    struct Claimed {
        _locks: Vec<std::fs::File>,
        ports: std::collections::VecDeque<u16>,
    }
    static CLAIMED: Mutex<Claimed> = Mutex::new(Claimed { _locks: Vec::new(), ports: std::collections::VecDeque::new() });
    let mut c = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        while let Some(port) = c.ports.pop_front() {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
        let (lock, block) = claim_block();
        c._locks.push(lock);
        c.ports.extend((0..BLOCK_PORTS).map(|i| PORT_BASE + block * BLOCK_PORTS + i));
    }
}

/// Claims a block no other live test process holds, starting from one
/// picked by pid (so processes rarely contend for the same lock file).
fn claim_block() -> (std::fs::File, u16) {
    let dir = std::env::temp_dir().join("canopy-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::process::id() % BLOCKS;
    for i in 0..BLOCKS {
        let block = (start + i) % BLOCKS;
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("block-{block}"))).unwrap();
        if f.try_lock().is_ok() {
            return (f, block as u16);
        }
    }
    panic!("every port block under {} is held by a live test process", dir.display());
}

/// A Canopy standalone process and everything it needs to restart on the
/// same data.
pub struct Canopy {
    child: Option<Child>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub influx: SocketAddr,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    backend_args: Vec<String>,
    _s3: Option<S3Server>,
    _dir: Option<tempfile::TempDir>,
}

impl Canopy {
    /// Starts Canopy on a fresh data directory and backend.
    pub fn start(backend: Backend, extra: &[&str]) -> Canopy {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Canopy::start_on(dir.path().join("data"), backend, extra);
        c._dir = Some(dir);
        c
    }

    /// Starts Canopy on `data_dir` (its log goes next to it), e.g. a small
    /// volume mounted there.
    pub fn start_on(data_dir: PathBuf, backend: Backend, extra: &[&str]) -> Canopy {
        let (s3, backend_args) = match backend {
            Backend::Local => (None, vec![]),
            Backend::S3 => {
                let s3 = S3Server::start();
                let args = vec![
                    "--object-store".to_string(),
                    format!("s3://{S3_BUCKET}"),
                    "--s3-endpoint".to_string(),
                    format!("http://127.0.0.1:{}", s3.port),
                    "--s3-access-key-id".to_string(),
                    S3_KEY.to_string(),
                    "--s3-secret-access-key".to_string(),
                    S3_SECRET.to_string(),
                ];
                (Some(s3), args)
            }
        };
        let mut c = Canopy {
            child: None,
            http: "127.0.0.1:0".parse().unwrap(),
            grpc: "127.0.0.1:0".parse().unwrap(),
            otlp_grpc: "127.0.0.1:0".parse().unwrap(),
            otlp_http: "127.0.0.1:0".parse().unwrap(),
            influx: "127.0.0.1:0".parse().unwrap(),
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            backend_args,
            _s3: s3,
            _dir: None,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("standalone")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--influx-addr",
                "127.0.0.1:0",
            ])
            .args(&self.backend_args)
            .args(&self.extra)
            .env("CANOPY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start canopy");
        let ready = wait_ready(&mut child, "standalone", || self.log());
        for (k, v) in parse_ready(&ready) {
            match k {
                "http" => self.http = v.parse().unwrap(),
                "grpc" => self.grpc = v.parse().unwrap(),
                "otlp_grpc" => self.otlp_grpc = v.parse().unwrap(),
                "otlp_http" => self.otlp_http = v.parse().unwrap(),
                "influx" => self.influx = v.parse().unwrap(),
                _ => {}
            }
        }
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.parent().unwrap().join("canopy.log")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `canopy compactor --once` on this server's metadata and object
    /// store (a separate process).
    /// The newest catalog version of a shard of the test group, read
    /// straight from the store's files (a 12-byte header, then the JSON,
    /// compressed since format 3).
    pub fn newest_catalog(&self, shard: u32) -> serde_json::Value {
        let dir = self.objects_dir().join(format!("catalog/{}/{shard:04}", super::GROUP));
        let newest = Canopy::files_under(&dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cat"))
            .max_by_key(|p| p.file_name().unwrap().to_owned())
            .expect("a catalog version");
        let bytes = std::fs::read(newest).unwrap();
        serde_json::from_slice(&canopy_storage::catalog_format::body_json(&bytes).unwrap()).unwrap()
    }

    /// How many parts each segment of a shard has, by segment start, in its
    /// newest catalog version.
    pub fn parts_per_segment(&self, shard: u32) -> std::collections::BTreeMap<i64, usize> {
        let mut per_segment = std::collections::BTreeMap::new();
        for p in self.newest_catalog(shard)["parts"].as_array().unwrap() {
            *per_segment.entry(p["segment_start"].as_i64().unwrap()).or_default() += 1;
        }
        per_segment
    }

    pub fn spawn_compactor_once(&self, extra: &[&str]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.arg("compactor").arg("--once").arg("--meta-dir").arg(self.data_dir.join("meta"));
        if self.backend_args.is_empty() {
            cmd.arg("--object-store").arg(self.data_dir.join("objects"));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        cmd.args(&self.backend_args)
            .args(extra)
            .env("CANOPY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start canopy compactor")
    }

    /// Sends SIGKILL: no flush, no cleanup, as in a crash.
    pub fn kill9(&mut self) {
        kill9_child(&mut self.child);
    }

    /// Sends SIGTERM and waits for a clean exit (which flushes).
    pub fn stop(&mut self) {
        if let Some(status) = stop_child(&mut self.child) {
            assert!(status.success(), "canopy exited with {status}; log:\n{}", self.log());
        }
    }

    /// The process's peak resident memory so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).expect("VmHWM in /proc status");
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    }

    /// The S3 server of the S3 backend.
    pub fn s3(&self) -> Option<&S3Server> {
        self._s3.as_ref()
    }

    /// Starts the process again on the same data directory and backend.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    /// The directory holding the object store's objects (local backend, or
    /// the s3s-fs bucket folder).
    pub fn objects_dir(&self) -> PathBuf {
        match &self._s3 {
            Some(s3) => s3.bucket_dir(),
            None => self.data_dir.join("objects"),
        }
    }

    /// Files under a directory, recursively.
    pub fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(dir, &mut out);
        out
    }

    /// Files under the data directory, for assertions about the WAL.
    pub fn data_files(&self, sub: &str) -> Vec<PathBuf> {
        Canopy::files_under(&self.data_dir.join(sub))
    }
}

/// How long a child may take to print `READY` (a cold start replays its
/// WAL; a loaded 2-core machine is slow, but not this slow).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Reads a Canopy child's stdout up to its `READY ...` line and returns
/// it; keeps draining stdout afterwards so the child never blocks on a full
/// pipe. Panics with the log (`log()`) if the child exits first or prints
/// nothing ready within [`READY_TIMEOUT`].
pub fn wait_ready(child: &mut Child, what: &str, log: impl Fn() -> String) -> String {
    let lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for l in lines.map_while(Result::ok) {
            if l.starts_with("READY ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(l);
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(ready) => ready,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("canopy {what} printed no READY within {READY_TIMEOUT:?}; log:\n{}", log())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("canopy {what} exited before READY; log:\n{}", log()),
    }
}

/// The `key=value` pairs of a `READY ...` line.
pub fn parse_ready(line: &str) -> std::collections::HashMap<&str, &str> {
    line.split_whitespace().skip(1).filter_map(|kv| kv.split_once('=')).collect()
}

/// SIGKILL to a child process, then reap it.
pub fn kill9_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// Lines of a server's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// When the test is failing (unwinding from a panic), prints the tail of a
/// server's log: its temporary folder goes with the test, and the log is
/// often the only account of why a request failed.
pub fn print_log_if_failing(what: &str, log: &str) {
    if !std::thread::panicking() {
        return;
    }
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    eprintln!("--- last {} lines of the {what} log ---\n{}\n--- end of the {what} log ---", tail.len(), tail.join("\n"));
}

/// SIGTERM to a child process; waits and returns its exit status.
pub fn stop_child(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    let mut c = child.take()?;
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    Some(c.wait().unwrap())
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
}

impl Drop for Canopy {
    fn drop(&mut self) {
        print_log_if_failing("standalone", &self.log());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
