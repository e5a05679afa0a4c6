//! A deployment's topology — the compose file's services, the Terraform
//! roles — started on this machine as real processes with the commands and
//! environment the deployment gives them, then written to and queried
//! through its liaison.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use super::*;

/// One Canopy process of a deployment: `canopy <command…>` with `environment`.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
}

/// Starts every service in order. `env_value(key, value)` maps the
/// deployment's value to this machine's (endpoints, credentials); arguments
/// under `/var/lib/canopy/` go to a folder of the service's own in `dir`; a
/// liaison's agent listeners get free loopback ports. Returns the processes
/// and the liaison's HTTP address.
pub fn start_services(services: &[Service], dir: &Path, env_value: impl Fn(&str, &str) -> String) -> (Vec<RoleProcess>, SocketAddr) {
    let mut processes = Vec::new();
    let mut liaison = None;
    for s in services {
        let folder = dir.join(&s.name);
        let local = |a: &str| match a.strip_prefix("/var/lib/canopy/") {
            Some(rest) => folder.join(rest).to_string_lossy().into_owned(),
            None => a.to_string(),
        };
        let env: Vec<(String, String)> = s.environment.iter().map(|(k, v)| (k.clone(), env_value(k, v))).collect();
        let role = s.command[0].clone();
        let mut args: Vec<String> = s.command[1..].iter().map(|a| local(a)).collect();
        if role == "liaison" {
            for flag in ["--otlp-grpc-addr", "--otlp-http-addr", "--influx-addr"] {
                args.extend([flag.to_string(), format!("127.0.0.1:{}", free_port())]);
            }
        }
        let p = RoleProcess::start_with_env(&role, args, env, dir.join(format!("{}.log", s.name)));
        if role == "liaison" {
            liaison = Some(p.http);
        }
        processes.push(p);
    }
    (processes, liaison.expect("a liaison among the services"))
}

/// Writes an hour of samples through the liaison, flushes every ingester and
/// checks every query shape the oracle knows against what was written.
pub async fn write_flush_and_check(liaison: SocketAddr) {
    let http = Http::new(liaison);
    create_schema(&http).await;
    let start = now_nanos() - HOUR;
    let written = samples(25, 100, start, 30_000_000_000, 7);
    let mut oracle = Oracle::default();
    for (i, chunk) in written.chunks(500).enumerate() {
        http.write_ok(&write_request(chunk, i as u64)).await;
        chunk.iter().for_each(|s| oracle.add(s));
    }
    assert!(http.flush().await > 0, "the ingesters flush to the bucket");
    check_against_oracle(&http, &oracle, time_range(start - 1, now_nanos() + HOUR)).await;
}
