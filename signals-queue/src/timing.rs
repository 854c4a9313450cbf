//! The timings every claimer of the jobs table shares (the thread and async workers, the
//! broker's relay): one value, its defaults and its bounds written once, and the builder
//! setters that reach it generated from one definition ([`timing_setters!`]).

use std::time::Duration;

use crate::clock::Clock;

/// How long a SQLite statement waits for another connection's write lock before
/// `SQLITE_BUSY`.
#[cfg(any(feature = "sqlite", feature = "sqlx-sqlite"))]
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failed attempt waits before the next: exponential backoff with full jitter,
/// capped. Attempt `n` (1-based) waits a random duration in `[0, min(cap, base * 2^(n-1))]`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, doubling, capped at 1 hour.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), given a random `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let ceiling = self
            .base
            .saturating_mul(1u32 << exponent.min(31))
            .min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// How long a payload that does not deserialize is retried by default (a rolling deploy whose
/// other version writes a field this one does not know yet) before the job is dead.
pub const DEFAULT_PAYLOAD_GRACE: Duration = Duration::from_secs(30 * 60);

/// How long an attempt may run by default when its handler sets no `timeout`.
pub(crate) const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// The timings of a worker or relay: its lease, how often it polls, its backoff, how long an
/// attempt may run and how long an unreadable payload is retried, and the clock it reads.
/// Every builder holds one ([`WorkerBuilder::timing`](crate::WorkerBuilder::timing),
/// [`AsyncWorkerBuilder::timing`](crate::AsyncWorkerBuilder::timing), the relay's), and its
/// setters (`lease`, `poll_interval`, ...) write into it; one value can configure every
/// claimer of an application alike.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use signals_queue::Timing;
///
/// let mut timing = Timing::default();
/// timing.lease = Duration::from_secs(10);
/// timing.poll_interval = Duration::from_millis(200);
/// assert_eq!(timing.job_timeout, Duration::from_secs(300));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Timing {
    /// How long the lease lasts without a renewal (default 30 s, at least 30 ms): renewed every
    /// third of it, shutdown included; once it lapses (a crash, a kill, a lost database)
    /// another claimer takes the running jobs back. It bounds how long a dead claimer's jobs
    /// wait, not how long a handler may run.
    pub lease: Duration,
    /// How often an idle claimer looks for jobs when nothing woke it (default 500 ms, at least
    /// 1 ms). On PostgreSQL a committed job wakes it through LISTEN/NOTIFY, and a job written
    /// in this process wakes it on SQLite; polling makes a lost wake-up a delay, never a lost
    /// job.
    pub poll_interval: Duration,
    /// The backoff between failed attempts (default: 1 s doubling, capped at 1 hour).
    pub retry: RetryPolicy,
    /// How long an attempt of a handler without its own `timeout = "..."` may run (default 5
    /// minutes, at least 1 ms). Past it the async worker drops the handler's future; the
    /// thread worker, which cannot stop a thread, fails the job and fences it off (its late
    /// commit is refused). Either way the attempt counts as failed and is retried.
    pub job_timeout: Duration,
    /// How long a job whose payload no longer deserializes into its signal keeps being
    /// retried (default 30 minutes, from when it was written): during a rolling deploy the
    /// other version may write a field this one does not know yet. After it the job is dead.
    /// `Duration::ZERO`: dead at its first attempt.
    pub payload_grace: Duration,
    /// The clock: the system's (default; on PostgreSQL the server's clock then decides every
    /// time), or [`Clock::manual`] in tests of backoff and retries.
    pub clock: Clock,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            job_timeout: DEFAULT_JOB_TIMEOUT,
            payload_grace: DEFAULT_PAYLOAD_GRACE,
            clock: Clock::system(),
        }
    }
}

impl Timing {
    /// The timings within their bounds (a lease of at least 30 ms, a poll interval and job
    /// timeout of at least 1 ms): what a claimer runs with.
    pub fn bounded(mut self) -> Timing {
        self.lease = self.lease.max(Duration::from_millis(30));
        self.poll_interval = self.poll_interval.max(Duration::from_millis(1));
        self.job_timeout = self.job_timeout.max(Duration::from_millis(1));
        self
    }
}

/// Not public API. The setters of a builder whose `timing` field is a [`Timing`], one per named
/// setting, documented once (on the fields of [`Timing`]); expands inside an `impl` block.
/// How long the fleet's leader keeps finished jobs before deleting them (in batches of 10,000
/// rows, the done counts kept exact), and the ticks periodic signals fired.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use signals_queue::Retention;
///
/// // Done jobs for an hour, dead, discarded and cancelled ones for a month.
/// let retention = Retention::default()
///     .done(Some(Duration::from_secs(3600)))
///     .dead(Some(Duration::from_secs(30 * 24 * 3600)));
/// assert_eq!(retention.done_after(), Some(Duration::from_secs(3600)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    done: Option<Duration>,
    dead: Option<Duration>,
}

impl Default for Retention {
    /// Done jobs for 24 hours, dead, discarded and cancelled ones for 14 days.
    fn default() -> Self {
        Retention {
            done: Some(Duration::from_secs(24 * 3600)),
            dead: Some(Duration::from_secs(14 * 24 * 3600)),
        }
    }
}

impl Retention {
    /// Nothing is deleted: finished jobs stay until an operator prunes them.
    pub fn keep_all() -> Retention {
        Retention {
            done: None,
            dead: None,
        }
    }

    /// How long done jobs (and periodic signals' ticks) are kept; `None`: for ever.
    pub fn done(mut self, after: Option<Duration>) -> Retention {
        self.done = after;
        self
    }

    /// How long dead, discarded and cancelled jobs are kept; `None`: for ever.
    pub fn dead(mut self, after: Option<Duration>) -> Retention {
        self.dead = after;
        self
    }

    /// See [`done`](Self::done).
    pub fn done_after(&self) -> Option<Duration> {
        self.done
    }

    /// See [`dead`](Self::dead).
    pub fn dead_after(&self) -> Option<Duration> {
        self.dead
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __timing_setters {
    ($($setting:ident: $ty:ty),* $(,)?) => {
        /// Every timing at once (a `signals_queue::Timing`); the setters below change one of
        /// them, as documented on its fields.
        pub fn timing(mut self, timing: $crate::Timing) -> Self {
            self.timing = timing;
            self
        }
        $(
            #[doc = concat!("Sets `Timing::", stringify!($setting), "` (see `signals_queue::Timing`).")]
            pub fn $setting(mut self, $setting: $ty) -> Self {
                self.timing.$setting = $setting;
                self
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_and_a_cap() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(policy.delay(1, 0.999_999).as_millis(), 99);
        assert_eq!(policy.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(30, 1.0), Duration::from_secs(1));
        assert_eq!(policy.delay(2, 0.0), Duration::ZERO);
        assert_eq!(policy.delay(u32::MAX, 1.0), Duration::from_secs(1));
    }
}
