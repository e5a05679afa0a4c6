//! Starting, measuring and stopping the two peers: Canopy standalone (a
//! release build) and VictoriaMetrics single-node, each on a free loopback
//! port with a data directory of its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running peer.
pub(crate) struct Peer {
    pub(crate) name: &'static str,
    child: Child,
    /// HTTP base URL, e.g. `http://127.0.0.1:1234`.
    pub(crate) base: String,
    /// gRPC address (Canopy only).
    pub(crate) grpc: Option<String>,
    pub(crate) data_dir: PathBuf,
}

impl Peer {
    /// The peer's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the process to exit (Canopy flushes and
    /// closes its part cache).
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped; [`Proc::stop`] asks it to stop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM and wait (a node deregisters, a querier closes its cache).
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Waits for a `canopy` child's `READY ...` line on its piped stdout and
/// returns it; the rest of its output is drained on a thread of its own.
pub(crate) fn wait_ready(child: &mut Child, what: &str) -> anyhow::Result<String> {
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("READY ") => break l,
            Some(Ok(_)) => {}
            _ => anyhow::bail!("canopy {what} exited before it was ready"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(ready)
}

impl Peer {
    /// Starts Canopy standalone with compaction on demand and a short GC grace.
    pub(crate) fn canopy(bin: &Path, dir: &Path) -> anyhow::Result<Peer> {
        Peer::canopy_with(bin, dir, &[])
    }

    /// Starts Canopy standalone as [`Peer::canopy`] does, with `extra` options.
    pub(crate) fn canopy_with(bin: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Peer> {
        let mut child = Command::new(bin)
            .args(["standalone", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--otlp-grpc-addr", "off", "--otlp-http-addr", "off", "--influx-addr", "off"])
            .args(["--compaction-interval-secs", "0"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("CANOPY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
        let ready = wait_ready(&mut child, "standalone")?;
        let http = ready.split_whitespace().find_map(|kv| kv.strip_prefix("http=")).expect("http address").to_string();
        let grpc = ready.split_whitespace().find_map(|kv| kv.strip_prefix("grpc=")).map(str::to_string);
        Ok(Peer { name: "canopy", child, base: format!("http://{http}"), grpc, data_dir: dir.to_path_buf() })
    }

    /// Starts VictoriaMetrics single-node.
    pub(crate) async fn victoria_metrics(bin: &str, dir: &Path) -> anyhow::Result<Peer> {
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(["-retentionPeriod=100y", "-search.latencyOffset=0s", "-loggerLevel=ERROR"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {bin} (apt-get install victoria-metrics): {e}"))?;
        let peer =
            Peer { name: "victoria-metrics", child, base: format!("http://127.0.0.1:{port}"), grpc: None, data_dir: dir.to_path_buf() };
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{}/health", peer.base)).await
                && r.status().is_success()
            {
                return Ok(peer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("victoria-metrics did not become healthy")
    }

    /// Makes everything durable and compact: flush + compaction (+ GC) for
    /// Canopy, force_flush + force_merge for VictoriaMetrics.
    pub(crate) async fn settle(&self) -> anyhow::Result<()> {
        let c = reqwest::Client::new();
        if self.name == "canopy" {
            c.post(format!("{}/api/v1/admin/flush", self.base)).send().await?.error_for_status()?;
            for _ in 0..64 {
                let r: serde_json::Value = c.post(format!("{}/api/v1/admin/compact", self.base)).send().await?.json().await?;
                if r.get("merges").is_none() {
                    break;
                }
            }
        } else {
            c.get(format!("{}/internal/force_flush", self.base)).send().await?.error_for_status()?;
            c.get(format!("{}/internal/force_merge", self.base)).send().await?.error_for_status()?;
            // force_merge runs in the background; give it time to finish.
            let mut last = 0;
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = self.bytes_on_disk();
                if now == last {
                    break;
                }
                last = now;
            }
        }
        Ok(())
    }

    /// Bytes of stored data: for Canopy the parts its newest catalog versions
    /// reference plus those versions (compaction inputs still in their GC
    /// grace period are not data); for VictoriaMetrics its data directory
    /// and its indexdb — its series index and label sets, which Canopy's
    /// parts hold too (the series index in each footer, labels as tags).
    pub(crate) fn bytes_on_disk(&self) -> u64 {
        if self.name != "canopy" {
            return du(&self.data_dir.join("data")) + self.index_bytes();
        }
        let mut total = 0;
        for shard_dir in dirs(&self.data_dir.join("objects/catalog")).iter().flat_map(|g| dirs(g)) {
            let newest = std::fs::read_dir(&shard_dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "cat"))
                .max();
            let Some(newest) = newest else { continue };
            let Ok(bytes) = std::fs::read(&newest) else { continue };
            total += bytes.len() as u64;
            // A catalog this build cannot read would leave its parts
            // uncounted: a wrong figure, not a smaller one.
            let json = canopy_storage::catalog_format::body_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", newest.display()));
            let state: serde_json::Value = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{}: {e}", newest.display()));
            total += state["parts"].as_array().into_iter().flatten().filter_map(|p| p["bytes"].as_u64()).sum::<u64>();
        }
        total
    }

    /// Of [`Peer::bytes_on_disk`], what VictoriaMetrics keeps in its indexdb
    /// (0 for Canopy, whose index lives in its parts).
    pub(crate) fn index_bytes(&self) -> u64 {
        if self.name == "canopy" { 0 } else { du(&self.data_dir.join("indexdb")) }
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

fn dirs(p: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

fn du(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| du(&e.path())).sum()).unwrap_or(0)
}
