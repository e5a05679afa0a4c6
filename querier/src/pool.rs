//! The CPU pool scans run on: blocking threads (never the async runtime's
//! workers, so a heavy query cannot stall WAL acknowledgements), at most one
//! job per core at a time. A job whose caller went away (the query deadline
//! passed, the client left) sees its cancel flag and stops early.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

/// A bounded pool of scan jobs.
#[derive(Debug, Clone)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
}

/// Raised when the caller of a job is gone.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl CpuPool {
    /// A pool running at most `threads` jobs at once.
    pub fn new(threads: usize) -> CpuPool {
        CpuPool { permits: Arc::new(Semaphore::new(threads.max(1))) }
    }

    /// A pool as wide as the machine.
    pub fn per_core() -> CpuPool {
        CpuPool::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Runs `job` on a blocking thread once a slot is free; `job` should
    /// check the flag it is given between units of work and stop when set.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> T {
        let permit = self.permits.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job(&cancel)
        });
        match handle.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_dropped_caller_cancels_its_job() {
        let pool = CpuPool::new(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let job = pool.run(move |cancel| {
            while !cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(()).unwrap();
        });
        assert!(tokio::time::timeout(Duration::from_millis(50), job).await.is_err());
        rx.recv_timeout(Duration::from_secs(10)).expect("the job saw the cancel flag");
        // The slot is free again.
        assert_eq!(pool.run(|_| 7).await, 7);
    }
}
