//! SIGINT and SIGTERM, caught from the start of the process. A role that
//! waited for them only once it was serving left a window after printing
//! READY in which SIGTERM took its default action — death without draining
//! or flushing (a test that stopped a server right after start-up caught
//! it). Signals are counted from the first instant instead, so none is lost
//! between start-up and the moment a role begins to wait. A second signal
//! ends the process at once, whatever it is doing (starting up against an
//! unreachable etcd, a shutdown that cannot finish).

use std::sync::OnceLock;

use tokio::sync::watch;

static RECEIVED: OnceLock<watch::Receiver<u64>> = OnceLock::new();

/// Installs the handlers; called once at start-up, inside the runtime.
pub(crate) fn install() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(0u64);
    let _ = RECEIVED.set(rx);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(())
}

/// True once a signal has arrived: long work (a compaction round) checks it
/// between steps and stops there.
pub(crate) fn stopping() -> bool {
    RECEIVED.get().is_some_and(|rx| *rx.borrow() >= 1)
}

/// Resolves once `n` signals (SIGINT or SIGTERM) have arrived since start-up:
/// 1 to shut down, 2 to stop waiting for a graceful shutdown.
pub(crate) async fn received(n: u64) {
    let mut rx = RECEIVED.get().expect("signals::install runs at start-up").clone();
    let _ = rx.wait_for(|&count| count >= n).await;
}
