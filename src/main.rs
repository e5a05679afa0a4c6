//! `canopy`: one binary for every role. `canopy standalone` runs liaison,
//! ingester and querier in one process on local defaults.

mod compactor;
mod standalone;

/// mimalloc instead of glibc malloc: ingest allocates many small strings
/// from many threads, where glibc's arena locks and consolidation cost half
/// the CPU (measured with perf on the remote-write path).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Compactor(compactor::CompactorArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CANOPY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Standalone(args) => rt.block_on(standalone::run(*args)),
        Command::Compactor(args) => rt.block_on(compactor::run(args)),
    }
}
