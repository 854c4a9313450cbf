//! The hint that this process wrote a job: `notify` wakes the workers of this process, which
//! look for it shortly (it is visible only once the caller commits). A hint only: polling finds
//! what a lost wake-up would have announced, and on PostgreSQL LISTEN tells of commits.

#[cfg(feature = "sqlite")]
use std::sync::{Condvar, Mutex};

/// Wakes this process's workers when a job may have been written. The job is visible only
/// once the caller commits, so a woken worker that finds nothing looks again shortly.
#[cfg(feature = "sqlite")]
pub(crate) static WAKE: Wake = Wake::new();

/// A generation counter and a condition variable: workers wait for the counter to move.
#[cfg(feature = "sqlite")]
pub(crate) struct Wake {
    generation: Mutex<u64>,
    changed: Condvar,
}

#[cfg(feature = "sqlite")]
impl Wake {
    const fn new() -> Wake {
        Wake {
            generation: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn notify(&self) {
        if let Ok(mut generation) = self.generation.lock() {
            *generation += 1;
            self.changed.notify_all();
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.lock().map_or(0, |g| *g)
    }

    /// Waits until the generation moves past `seen` or `timeout` passes; the new generation.
    pub(crate) fn wait(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let Ok(generation) = self.generation.lock() else {
            return seen;
        };
        match self
            .changed
            .wait_timeout_while(generation, timeout, |generation| *generation == seen)
        {
            Ok((generation, _)) => *generation,
            Err(_) => seen,
        }
    }
}

/// The async workers' wake-up: the async twin of `WAKE` (only workers that do not LISTEN
/// heed it).
#[cfg(feature = "async")]
/// Wakes this process's async workers when a job may have been written (before its commit:
/// a worker that finds nothing looks again shortly).
pub static WAKE_ASYNC: tokio::sync::Notify = tokio::sync::Notify::const_new();
