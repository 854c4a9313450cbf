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

/// The gauges the fleet's leader publishes, as last set: zeroed when a state empties, and all
/// of them when the leader stops leading (another worker publishes them then).
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// (queue, handler, state) of `signals_jobs`.
    jobs: std::collections::BTreeSet<(String, String, String)>,
    /// Queues of `signals_oldest_due_job_age_seconds`.
    oldest: std::collections::BTreeSet<String>,
}

impl Gauges {
    /// Publishes the jobs by queue, handler and state (`signals_jobs`; done jobs are the kept
    /// counts) and each queue's oldest due job's age (`signals_oldest_due_job_age_seconds`, 0
    /// when none is due), from the overview's rows.
    pub(crate) fn publish(&mut self, rows: &crate::ops::OverviewRows, now: i64) {
        let mut jobs = std::collections::BTreeMap::<(String, String, String), i64>::new();
        let mut oldest = std::collections::BTreeMap::<String, i64>::new();
        for (queue, handler, state, count, due) in &rows.0 {
            *jobs
                .entry((queue.clone(), handler.clone(), state.clone()))
                .or_default() += count;
            let age = due.map_or(0, |due| now.saturating_sub(due).max(0));
            let slot = oldest.entry(queue.clone()).or_default();
            *slot = (*slot).max(age);
        }
        for key in self.jobs.iter().filter(|key| !jobs.contains_key(*key)) {
            jobs_gauge(key).set(0.0);
        }
        for (key, count) in &jobs {
            jobs_gauge(key).set(*count as f64);
        }
        for queue in self
            .oldest
            .iter()
            .filter(|queue| !oldest.contains_key(*queue))
        {
            oldest_gauge(queue).set(0.0);
        }
        for (queue, age) in &oldest {
            oldest_gauge(queue).set(*age as f64 / 1e3);
        }
        self.jobs = jobs.into_keys().collect();
        self.oldest = oldest.into_keys().collect();
    }

    /// Zeroes every gauge published: this worker no longer leads.
    pub(crate) fn clear(&mut self) {
        for key in std::mem::take(&mut self.jobs) {
            jobs_gauge(&key).set(0.0);
        }
        for queue in std::mem::take(&mut self.oldest) {
            oldest_gauge(&queue).set(0.0);
        }
    }
}

/// A worker that stops, or whose leading task is dropped at shutdown, leaves no stale gauge
/// behind: the next leader publishes them.
impl Drop for Gauges {
    fn drop(&mut self) {
        self.clear();
    }
}

fn jobs_gauge((queue, handler, state): &(String, String, String)) -> metrics::Gauge {
    let labels = [
        ("queue", queue.clone()),
        ("handler", handler.clone()),
        ("state", state.clone()),
    ];
    metrics::gauge!("signals_jobs", &labels)
}

fn oldest_gauge(queue: &str) -> metrics::Gauge {
    metrics::gauge!("signals_oldest_due_job_age_seconds", "queue" => queue.to_owned())
}
