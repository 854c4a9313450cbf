//! The queue's metrics, through the [`metrics`] facade: the application installs the exporter
//! it wants (Prometheus, StatsD, OpenTelemetry...), and without one every call here is a no-op
//! that costs a load and a branch. Both workers call these at the same points of a job's life;
//! the names and labels are documented in `docs/metrics.md`.
//!
//! Every series is labelled by `handler` (the job name) and `queue`.

use std::time::Duration;

use metrics::{counter, histogram};

use crate::job::JobInfo;
use crate::lifecycle::Claimed;

fn labels(info: &JobInfo) -> [(&'static str, &'static str); 2] {
    [("handler", info.name()), ("queue", info.queue())]
}

/// An attempt starts, `now` by the worker's clock (milliseconds since the epoch): counted, and
/// its lag observed (the start less the job's due time, the later of its `run_at` and its
/// creation; never negative when the database's clock runs ahead of the worker's).
pub(crate) fn started(job: &Claimed, info: &JobInfo, now: i64) {
    let labels = labels(info);
    counter!("signals_jobs_started_total", &labels).increment(1);
    let due = job.run_at.max(job.created_at);
    let lag = Duration::from_millis(now.saturating_sub(due).max(0) as u64);
    histogram!("signals_job_lag_seconds", &labels).record(lag.as_secs_f64());
}

/// An attempt's handler returned (or panicked, or timed out) after `took`.
pub(crate) fn ran(info: &JobInfo, took: Duration) {
    histogram!("signals_job_run_seconds", &labels(info)).record(took.as_secs_f64());
}

/// `count` jobs of `info`'s handler were completed (their completions committed).
pub(crate) fn succeeded(info: &JobInfo, count: u64) {
    counter!("signals_jobs_succeeded_total", &labels(info)).increment(count);
}

/// A failed attempt was recorded: the job runs again after a backoff (retried) or is dead.
pub(crate) fn failed(info: &JobInfo, dead: bool) {
    let labels = labels(info);
    counter!("signals_jobs_failed_total", &labels).increment(1);
    match dead {
        true => counter!("signals_jobs_dead_total", &labels).increment(1),
        false => counter!("signals_jobs_retried_total", &labels).increment(1),
    }
}

/// The handler asked to be tried again later ([`Snooze`](crate::Snooze)).
pub(crate) fn snoozed(info: &JobInfo) {
    counter!("signals_jobs_snoozed_total", &labels(info)).increment(1);
}

/// The handler discarded its job ([`Discard`](crate::Discard)).
pub(crate) fn discarded(info: &JobInfo) {
    counter!("signals_jobs_discarded_total", &labels(info)).increment(1);
}
