//! Time for tests that control it. In production no process's clock decides anything another
//! process relies on: on PostgreSQL the server's clock is read in the statements, and on
//! SQLite leases are judged by renewal counters (see [`lifecycle`](crate::lifecycle)).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the unit of every time the jobs table stores.
pub(crate) type Millis = i64;

/// Where the queue reads the time: the system clock (then, on PostgreSQL, the server's clock),
/// or a manual one in tests of backoff and retries.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still at `millis` (since the Unix epoch) until moved with
    /// [`Clock::advance`]; for tests of leases and retries.
    pub fn manual(millis: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(millis))),
        }
    }

    /// Moves a manual clock forward (does nothing to the system clock).
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(now) = &self.manual {
            now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    /// A manual clock's time; `None` for the system clock, so that on PostgreSQL the
    /// database's clock decides.
    pub(crate) fn fixed(&self) -> Option<Millis> {
        self.manual.as_ref().map(|now| now.load(Ordering::SeqCst))
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now(&self) -> Millis {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as i64),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            Some(_) => write!(f, "Clock::manual({})", self.now()),
            None => f.write_str("Clock::system()"),
        }
    }
}
