//! `canopy-bench`: Canopy side by side with VictoriaMetrics on TSBS-shaped
//! data, in one run on one machine. For each load (InfluxDB line protocol,
//! Prometheus remote write) it starts each peer fresh, loads the same rows,
//! settles (flush + compaction / force-merge), and records ingest rate,
//! bytes per sample and peak RSS; the table goes to stdout and, as markdown
//! and JSON, to the results folder.

mod chart;
mod fan_out;
mod load;
mod peers;
mod queries;
mod read_path;
mod real_agents;
mod report;
mod run;

use std::path::PathBuf;
use std::sync::Arc;

use canopy_bench::tsbs;
use clap::Parser;

use crate::load::Protocol;
use crate::peers::Peer;
use crate::report::Figures;

#[derive(Debug, Parser)]
#[command(about = "Canopy vs VictoriaMetrics on TSBS devops cpu-only data")]
struct Args {
    /// Number of hosts.
    #[arg(long, default_value_t = 100)]
    scale: usize,
    /// Hours of data, ending now.
    #[arg(long, default_value_t = 24)]
    hours: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rows per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent requests.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The Canopy binary (a release build).
    #[arg(long, default_value = "target/release/canopy")]
    canopy_bin: PathBuf,
    #[arg(long, default_value = "victoria-metrics")]
    victoria_metrics_bin: String,
    /// Warm repetitions of each query (p50/p95 over them).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Where results/<time>/results.{md,json} go.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Instead of the comparison: load Canopy alone (line protocol), then
    /// repeat this query type for `--profile-secs`, printing Canopy's pid so
    /// a profiler can attach (`perf record -g -p PID`).
    #[arg(long)]
    profile: Option<String>,
    #[arg(long, default_value_t = 20)]
    profile_secs: u64,
    /// Instead of the comparison: the read path on S3 (the in-process server
    /// behind a proxy adding this many ms before each response) — cold,
    /// warm from the disk tier, warm from memory, and local disk.
    #[arg(long)]
    object_latency_ms: Option<u64>,
    /// Instead of the comparison: a real Prometheus scrapes itself and
    /// node-exporter every second for this many minutes, remote-writing to
    /// both peers; bytes per sample on that data.
    #[arg(long)]
    real_agents_minutes: Option<u64>,
    /// Leave the run's work directory (both peers' data) in place, to
    /// inspect it — e.g. `cargo run -p canopy-storage --example part_bytes`.
    #[arg(long)]
    keep_work: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let steps = a.hours * 3600 / tsbs::INTERVAL_SECS as usize;
    let start = (now - steps as i64 * tsbs::INTERVAL_SECS) / 60 * 60;
    let hosts = Arc::new(tsbs::hosts(a.scale, a.seed));
    let rows = Arc::new(tsbs::rows(a.scale, start, steps, a.seed));
    let samples = (rows.len() * tsbs::FIELDS.len()) as u64;
    eprintln!("TSBS devops cpu-only: {} hosts x {} h = {} rows, {} samples", a.scale, a.hours, rows.len(), samples);
    let work = std::env::temp_dir().join(format!("canopy-bench-{}", std::process::id()));
    if let Some(name) = &a.profile {
        let dir = work.join("canopy-profile");
        std::fs::create_dir_all(&dir)?;
        let peer = Peer::canopy(&a.canopy_bin, &dir)?;
        load::load(&peer.base, peer.grpc.as_deref(), Protocol::Influx, hosts.clone(), rows.clone(), a.batch, a.concurrency).await?;
        peer.settle().await?;
        let end = (start + steps as i64 * tsbs::INTERVAL_SECS) * 1000;
        let cases = queries::cases(a.scale, start * 1000, end, a.seed);
        let case = cases.iter().find(|c| c.name == name).ok_or_else(|| anyhow::anyhow!("no query type {name}"))?;
        eprintln!("canopy pid {}: running {name} for {} s", peer.pid(), a.profile_secs);
        let n = run::repeat_canopy(&peer.base, case, std::time::Duration::from_secs(a.profile_secs)).await?;
        eprintln!("{n} runs");
        drop(peer);
        remove_work(&work, a.keep_work);
        return Ok(());
    }
    if let Some(minutes) = a.real_agents_minutes {
        let table = real_agents::run(&a.canopy_bin, &a.victoria_metrics_bin, &work, minutes).await?;
        return publish(&a.out, now, "real-agents.md", &table, &work, a.keep_work);
    }
    if let Some(latency) = a.object_latency_ms {
        let end = (start + steps as i64 * tsbs::INTERVAL_SECS) * 1000;
        let table = read_path::run(
            &a.canopy_bin,
            &work,
            std::time::Duration::from_millis(latency),
            hosts.clone(),
            rows.clone(),
            (start * 1000, end),
            a.repeats,
            a.batch,
            a.concurrency,
        )
        .await?;
        return publish(&a.out, now, "read-path.md", &table, &work, a.keep_work);
    }
    let mut figs = Vec::new();
    let mut latencies = Vec::new();
    let mut mismatches = Vec::new();
    for protocol in [Protocol::Influx, Protocol::RemoteWrite, Protocol::Native] {
        let mut alive = Vec::new();
        let peer_names: &[&str] = if protocol == Protocol::Native { &["canopy"] } else { &["canopy", "victoria-metrics"] };
        for &peer_name in peer_names {
            let dir = work.join(format!("{peer_name}-{}", protocol.name().replace(' ', "-")));
            std::fs::create_dir_all(&dir)?;
            let peer = match peer_name {
                "canopy" => Peer::canopy(&a.canopy_bin, &dir)?,
                _ => Peer::victoria_metrics(&a.victoria_metrics_bin, &dir).await?,
            };
            eprintln!("{peer_name}:");
            let loaded =
                load::load(&peer.base, peer.grpc.as_deref(), protocol, hosts.clone(), rows.clone(), a.batch, a.concurrency).await?;
            peer.settle().await?;
            figs.push(Figures {
                peer: peer.name,
                protocol: protocol.name(),
                samples,
                secs: loaded.secs,
                ack_ms: loaded.ack_ms(0.5).zip(loaded.ack_ms(0.99)),
                bytes: peer.bytes_on_disk(),
                peak_rss: peer.peak_rss(),
            });
            alive.push(peer);
        }
        // Queries run on the line-protocol data (one measure with ten fields in Canopy).
        if protocol == Protocol::Influx {
            let end = (start + steps as i64 * tsbs::INTERVAL_SECS) * 1000;
            for case in &queries::cases(a.scale, start * 1000, end, a.seed) {
                let r = run::run_case(&alive[0].base, &alive[1].base, case, a.repeats).await?;
                if let Err(e) = &r.compared {
                    eprintln!("{e}");
                    mismatches.push(e.clone());
                }
                latencies.push(r);
            }
        }
        drop(alive);
    }
    let floor = tsbs::entropy_floor_bytes_per_sample(&rows);
    let steps = tsbs::step_entropy_bytes_per_sample(&rows);
    let table = format!(
        "{}\nEntropy floor of this data (the generator's random-walk steps): {floor:.3} bytes/sample; the steps' own entropy (the best coder of a value's step without context): {steps:.3} ({:.2}× the floor); Canopy's line protocol parts: {}\n\n{}",
        report::markdown(&figs),
        steps / floor,
        figs.iter().find(|f| f.peer == "canopy" && f.protocol == Protocol::Influx.name()).map_or("—".to_string(), |f| format!(
            "{:.3} ({:.2}× the floor)",
            f.bytes_per_sample(),
            f.bytes_per_sample() / floor
        )),
        run::markdown(&latencies)
    );
    println!("\n{table}");
    let out = a.out.join(format!("{now}"));
    std::fs::create_dir_all(&out)?;
    let header = format!(
        "TSBS devops cpu-only, {} hosts x {} h ({} samples), batch {}, concurrency {}\n\n",
        a.scale, a.hours, samples, a.batch, a.concurrency
    );
    std::fs::write(out.join("results.md"), format!("{header}{table}"))?;
    let mut bars = Vec::new();
    for p in [Protocol::Influx, Protocol::RemoteWrite] {
        let c = figs.iter().find(|f| f.protocol == p.name() && f.peer == "canopy");
        let v = figs.iter().find(|f| f.protocol == p.name() && f.peer == "victoria-metrics");
        if let (Some(c), Some(v)) = (c, v) {
            let short = if p == Protocol::Influx { "line protocol" } else { "remote write" };
            bars.push(chart::Bar {
                label: format!("ingest, {short}"),
                ratio: c.samples_per_sec() / v.samples_per_sec(),
                higher_is_better: true,
            });
            bars.push(chart::Bar {
                label: format!("bytes/sample, {short}"),
                ratio: c.bytes_per_sample() / v.bytes_per_sample(),
                higher_is_better: false,
            });
            bars.push(chart::Bar {
                label: format!("peak RSS, {short}"),
                ratio: c.peak_rss as f64 / v.peak_rss.max(1) as f64,
                higher_is_better: false,
            });
        }
    }
    for r in &latencies {
        bars.push(chart::Bar { label: format!("query {}", r.name), ratio: r.warm_p50_ratio(), higher_is_better: false });
    }
    chart::draw(&format!("Canopy vs VictoriaMetrics: TSBS cpu-only, {} hosts x {} h", a.scale, a.hours), &bars, &out.join("results.png"))?;
    let json = serde_json::json!({"ingest": report::json(&figs), "queries": run::json(&latencies)});
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!("results in {}", out.display());
    remove_work(&work, a.keep_work);
    if !mismatches.is_empty() {
        anyhow::bail!("{} query types answered differently:\n{}", mismatches.len(), mismatches.join("\n"));
    }
    Ok(())
}

/// Prints a side run's table, keeps it as `<out>/<now>/<file>`, and removes
/// the run's work directory (unless kept).
fn publish(out: &std::path::Path, now: i64, file: &str, table: &str, work: &std::path::Path, keep: bool) -> anyhow::Result<()> {
    println!("\n{table}");
    let out = out.join(format!("{now}"));
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join(file), table)?;
    remove_work(work, keep);
    Ok(())
}

/// Removes the run's work directory, or says where it was kept.
fn remove_work(work: &std::path::Path, keep: bool) {
    if keep {
        eprintln!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(work);
    }
}
