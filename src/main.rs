//! `canopy`: one binary for every role. `canopy standalone` runs liaison,
//! ingester and querier in one process on local defaults; `canopy liaison`,
//! `canopy ingester`, `canopy querier` and `canopy compactor` run them as a
//! cluster on etcd and an object store.

mod args;
mod bucket_lifecycle;
mod compactor;
mod ingester_role;
mod lambda_args;
mod liaison_role;
mod machine_memory;
mod node;
mod querier_role;
mod signals;
mod standalone;

/// mimalloc instead of glibc malloc: ingest allocates many small strings
/// from many threads, where glibc's arena locks and consolidation cost half
/// the CPU (measured with perf on the remote-write path).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. With them on, the
/// allocator's fresh memory arrives as 2 MiB pages zeroed whole on first
/// touch: ingest (memtables that grow and are dropped at every flush) spent
/// 17% of its CPU in the kernel zeroing them, and peak RSS grew by a fifth
/// (perf and VmHWM on the remote-write load; the usual advice for databases).
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integer arguments and
    // only changes this process's memory policy.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!("canopy: could not turn transparent huge pages off: {}", std::io::Error::last_os_error());
    }
}

/// Other systems have no transparent huge pages to turn off.
#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

use clap::{Parser, Subcommand};

/// Canopy: an observability database on object storage.
#[derive(Debug, Parser)]
#[command(name = "canopy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process: local WAL, embedded metadata, and a
    /// local-directory object store unless `--object-store` says otherwise.
    Standalone(Box<standalone::StandaloneArgs>),
    /// Run compaction, retention and garbage collection as a separate process.
    Compactor(Box<compactor::CompactorArgs>),
    /// Cluster gateway: schemas in etcd, writes routed to shard owners, queries fanned out.
    Liaison(Box<liaison_role::LiaisonArgs>),
    /// Cluster ingester: owns shards, WAL + memtables, flushes parts.
    Ingester(Box<ingester_role::IngesterArgs>),
    /// Cluster querier: runs shard fragments of queries over object storage.
    Querier(Box<querier_role::QuerierArgs>),
}

fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CANOPY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async { signals::install() })?;
    rt.block_on(async {
        let role = async {
            match cli.command {
                Command::Standalone(args) => standalone::run(*args).await,
                Command::Compactor(args) => compactor::run(*args).await,
                Command::Liaison(args) => liaison_role::run(*args).await,
                Command::Ingester(args) => ingester_role::run(*args).await,
                Command::Querier(args) => querier_role::run(*args).await,
            }
        };
        tokio::select! {
            r = role => r,
            _ = signals::received(2) => {
                tracing::warn!("second signal: exiting at once (unflushed points stay in the WAL, replayed at the next start)");
                std::process::exit(130);
            }
        }
    })
}
