//! Waiting for a condition instead of sleeping: every wait in the tests
//! polls what it waits for up to a deadline, and fails saying what never
//! happened (a loaded 2-core machine makes any fixed sleep a guess).

use std::future::Future;
use std::time::Duration;

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(100);

/// Polls `cond` until it returns true; after `secs` fails with `what` and
/// whatever `context` returns then (logs, the last state seen).
pub async fn wait_until<F, Fut>(secs: u64, what: &str, context: impl Fn() -> String, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} (waited {secs} s)\n{}", context());
        tokio::time::sleep(POLL).await;
    }
}

/// Blocking twin of [`wait_until`] for synchronous tests and harness code.
pub fn wait_until_blocking(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what} (waited {secs} s)");
        std::thread::sleep(POLL);
    }
}
