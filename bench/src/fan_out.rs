//! The cold read fanned out: the read-path data and query on a cluster (etcd,
//! one ingester, a liaison) whose fragments run cold on one querier, on two,
//! or on the query function (`cargo lambda watch --only-lambda-apis` and
//! instances of the `canopy-lambda` bootstrap), every object-store response
//! held back as on S3. Each repetition restarts what reads with an empty
//! cache. Requests, bytes and invocations are the query's own stats; $ per
//! query is priced from them at S3's and Lambda's list prices.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use canopy_api::v1::QueryRequest;
use canopy_bench::local_lambda;
use canopy_bench::s3::{S3_BUCKET, S3_KEY, S3_SECRET};
use canopy_bench::tsbs;

use crate::load;
use crate::peers::{Proc, free_port, wait_ready};
use crate::read_path::{Phase, run_query};

/// S3 standard GET, per request (us-east-1 list price).
pub(crate) const S3_GET_USD: f64 = 0.0004 / 1000.0;
/// Lambda, per request and per GB-second (x86, us-east-1 list prices).
const LAMBDA_REQUEST_USD: f64 = 0.20 / 1e6;
const LAMBDA_GB_SECOND_USD: f64 = 0.000_016_666_7;
/// Memory the function is priced at (its configured size).
const LAMBDA_MEMORY_GB: f64 = 1.0;
/// Where in the bucket the cluster keeps its copy of the data.
const PREFIX: &str = "fan-out";
/// Instances of the function run locally.
const LAMBDA_INSTANCES: usize = 4;

/// Starts `canopy <role>` on the given loopback ports and waits for its READY line.
fn start_role(bin: &Path, role: &str, (grpc, http): (u16, u16), args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Proc> {
    let mut child = Command::new(bin)
        .arg(role)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--node-host", "127.0.0.1"])
        .args(args)
        .envs(env.iter().copied())
        .env("CANOPY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {} {role}: {e}", bin.display()))?;
    wait_ready(&mut child, role)?;
    Ok(Proc(child))
}

/// A liaison with `extra` options, and its HTTP base URL.
fn start_liaison(bin: &Path, common: &[String], extra: &[String], env: &[(&str, &str)]) -> anyhow::Result<(Proc, String)> {
    let http = free_port();
    let mut args = common.to_vec();
    args.extend(["--otlp-grpc-addr", "off", "--otlp-http-addr", "off", "--influx-addr", "off"].map(String::from));
    args.extend(extra.iter().cloned());
    let p = start_role(bin, "liaison", (free_port(), http), &args, env)?;
    Ok((p, format!("http://127.0.0.1:{http}")))
}

/// Runs the fan-out phases; `store` are the object-store options (through
/// the latency proxy). `None` when etcd is not installed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    bin: &Path,
    work: &Path,
    store: &[String],
    q: &QueryRequest,
    hosts: Arc<Vec<tsbs::Host>>,
    rows: Arc<Vec<tsbs::Row>>,
    flushes: usize,
    repeats: usize,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<Option<Vec<Phase>>> {
    let dir = work.join("fan-out");
    std::fs::create_dir_all(&dir)?;
    let etcd_port = free_port();
    let peer_port = free_port();
    let etcd = match Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &format!("bench=http://127.0.0.1:{peer_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => Proc(c),
        Err(e) => {
            eprintln!("fan-out: etcd not available ({e}); skipped (apt-get install etcd-server)");
            return Ok(None);
        }
    };
    wait_port(etcd_port).await?;
    let mut common: Vec<String> = vec!["--etcd-endpoints".into(), format!("http://127.0.0.1:{etcd_port}")];
    // Under a prefix of its own: the bucket already holds standalone's copy.
    common.extend(store.iter().map(|a| if a == &format!("s3://{S3_BUCKET}") { format!("{a}/{PREFIX}") } else { a.clone() }));
    let mut ingester_args = common.clone();
    ingester_args.extend(["--data-dir".to_string(), dir.join("ingester").to_string_lossy().into_owned()]);
    let ingester = start_role(bin, "ingester", (free_port(), free_port()), &ingester_args, &[])?;
    let (liaison, base) = start_liaison(bin, &common, &[], &[])?;
    let querier_ports = [free_port(), free_port()];
    let start_querier = |i: usize| {
        let cache = dir.join(format!("querier-{i}-cache"));
        let _ = std::fs::remove_dir_all(&cache);
        let mut args = common.clone();
        args.extend(["--cache-dir".to_string(), cache.to_string_lossy().into_owned()]);
        start_role(bin, "querier", (querier_ports[i], free_port()), &args, &[])
    };
    let mut queriers = vec![start_querier(0)?];
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("fan-out: loading {} rows through a liaison, {flushes} flushes", rows.len());
    load::load_in_flushed_slices(&base, hosts, &rows, flushes, batch, concurrency).await?;

    let mut phases = Vec::new();
    let mut points = None;
    for n in [1, 2] {
        let mut phase = Phase::new(if n == 1 { "cluster, cold, 1 querier" } else { "cluster, cold, 2 queriers (rendezvous)" });
        for _ in 0..repeats.max(1) {
            for q in queriers.drain(..) {
                q.stop();
            }
            queriers = (0..n).map(&start_querier).collect::<anyhow::Result<_>>()?;
            // The liaison learns of them through its etcd watch.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (ms, stats, got) = run_query(&base, q).await?;
            anyhow::ensure!(*points.get_or_insert(got) == got, "{}: {got} points, first phase had {points:?}", phase.name);
            phase.add(ms, stats);
        }
        phases.push(phase);
    }

    // The query function: an emulator and instances with empty caches.
    let cargo_lambda = local_lambda::cargo_lambda();
    let bootstrap = bin.with_file_name("canopy-lambda");
    let lambda_port = free_port();
    let emulator = local_lambda::emulator_command(lambda_port).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    match (emulator, bootstrap.exists()) {
        (Ok(emulator), true) => {
            let _emulator = Proc(emulator);
            wait_port(lambda_port).await?;
            let creds = [("AWS_ACCESS_KEY_ID", S3_KEY), ("AWS_SECRET_ACCESS_KEY", S3_SECRET), ("AWS_REGION", "us-east-1")];
            let extra: Vec<String> =
                ["--lambda-when", "always", "--lambda-function", "_", "--lambda-endpoint", &format!("http://127.0.0.1:{lambda_port}")]
                    .map(String::from)
                    .to_vec();
            let (fn_liaison, fn_base) = start_liaison(bin, &common, &extra, &creds)?;
            let endpoint = store_endpoint(store);
            let mut phase = Phase::new("cluster, cold, query function (4 local instances)");
            for _ in 0..repeats.max(1) {
                let functions: Vec<Proc> = (0..LAMBDA_INSTANCES)
                    .map(|i| start_function(&bootstrap, lambda_port, &endpoint, &dir.join(format!("lambda-{i}"))))
                    .collect::<anyhow::Result<_>>()?;
                let (ms, stats, got) = run_query(&fn_base, q).await?;
                anyhow::ensure!(points == Some(got), "query function: {got} points, queriers had {points:?}");
                anyhow::ensure!(stats.lambda_invocations > 0 && stats.lambda_fallbacks == 0, "the function did not answer: {stats:?}");
                phase.add(ms, stats);
                drop(functions);
            }
            phases.push(phase);
            fn_liaison.stop();
        }
        (Err(e), _) => eprintln!("fan-out: {cargo_lambda} not available ({e}); the query-function phase is skipped"),
        (_, false) => eprintln!("fan-out: {} is missing (cargo build --release -p canopy-lambda); skipped", bootstrap.display()),
    }
    for q in queriers {
        q.stop();
    }
    liaison.stop();
    ingester.stop();
    drop(etcd);
    Ok(Some(phases))
}

/// The S3 endpoint among the object-store options.
fn store_endpoint(store: &[String]) -> String {
    let i = store.iter().position(|a| a == "--s3-endpoint").expect("an S3 endpoint");
    store[i + 1].clone()
}

/// One instance of the function, its cache (memory and `/tmp`-like disk)
/// empty, reading the bucket through the latency proxy.
fn start_function(bootstrap: &Path, port: u16, s3: &str, cache: &Path) -> anyhow::Result<Proc> {
    let _ = std::fs::remove_dir_all(cache);
    let child = local_lambda::function_command(bootstrap, port, &format!("s3://{S3_BUCKET}/{PREFIX}"), s3, cache)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Proc(child))
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("nothing listens on {addr}")
}

/// $ per query: GETs at S3's price, plus, for invocations, Lambda's request
/// price and GB-seconds bounded by the query's wall time per invocation.
pub(crate) fn usd_per_query(requests: u64, invocations: u64, millis: f64) -> f64 {
    requests as f64 * S3_GET_USD + invocations as f64 * (LAMBDA_REQUEST_USD + millis / 1000.0 * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND_USD)
}
