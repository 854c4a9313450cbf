//! The operator's view of jobs, as plain data: the states an operator reads (pending,
//! scheduled, running, done, dead, discarded, cancelled), filters, listed jobs with their
//! attempts, actions, and the counts by queue and handler. The stores fill these; the admin
//! API ([`AsyncQueue`](crate::AsyncQueue), [`Queue`](crate::Queue)) and the command line
//! `signals-queue` hand them out.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job's state as an operator reads it, whatever the database stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobStatus {
    /// Waiting, and due: the next claim may take it.
    Pending,
    /// Waiting, not yet due (a delay, or a retry's backoff).
    Scheduled,
    /// Claimed by a worker, running.
    Running,
    /// Completed (until pruned).
    Done,
    /// Out of attempts, or not runnable; kept with its error until retried or pruned.
    Dead,
    /// Discarded: it will never run (a handler said so, or an operator).
    Discarded,
    /// Cancelled by an operator (a running one was dropped by its worker).
    Cancelled,
}

impl JobStatus {
    /// Every status, in the order counts are printed.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Scheduled,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Dead,
        JobStatus::Discarded,
        JobStatus::Cancelled,
    ];

    /// The word, as the command line and the JSON print it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
            JobStatus::Discarded => "discarded",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(word: &str) -> Result<JobStatus, String> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == word)
            .ok_or_else(|| {
                let words: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state `{word}`: one of {}", words.join(", "))
            })
    }
}

/// Which jobs a listing or an action concerns; every part optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobStatus>,
    /// Only jobs of this handler (its job name).
    pub handler: Option<String>,
    /// Only jobs on this queue.
    pub queue: Option<String>,
}

impl JobFilter {
    /// Every job.
    pub fn new() -> JobFilter {
        JobFilter::default()
    }

    /// Only jobs in `state`.
    pub fn state(mut self, state: JobStatus) -> JobFilter {
        self.state = Some(state);
        self
    }

    /// Only jobs of `handler`.
    pub fn handler(mut self, handler: impl Into<String>) -> JobFilter {
        self.handler = Some(handler.into());
        self
    }

    /// Only jobs on `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> JobFilter {
        self.queue = Some(queue.into());
        self
    }
}

/// A job as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JobSummary {
    /// The job's id.
    pub id: i64,
    /// Its handler's job name.
    pub handler: String,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobStatus,
    /// Attempts charged so far (the running one included).
    pub attempt: u32,
    /// Attempts it may have.
    pub max_attempts: u32,
    /// When it is (or was) due, in milliseconds since the Unix epoch: the later of its
    /// `run_at` and its creation.
    pub due_at: i64,
    /// Its last failed attempt's error.
    pub last_error: Option<String>,
}

/// One attempt of a job, as the statement that recorded its outcome wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempt {
    /// When it started (its claim), in milliseconds since the Unix epoch; `None` for an
    /// attempt a release before schema 6 claimed.
    pub started_at: Option<i64>,
    /// How long it ran until its outcome was recorded.
    pub duration_ms: Option<i64>,
    /// The worker that ran it: `host:pid`.
    pub worker: Option<String>,
    /// Its error chain or panic message; `None` if it succeeded.
    pub error: Option<String>,
}

/// A job with its payload and every attempt it had.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobDetail {
    /// As a listing shows it.
    pub summary: JobSummary,
    /// The signal (or message) as JSON.
    pub payload: String,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// What an operator does to jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// A dead, discarded, cancelled or scheduled job runs now (a dead one with its attempts
    /// reset).
    Retry,
    /// A waiting or dead job will never run.
    Discard,
    /// A waiting or running job is cancelled: a running one's claim is revoked (its
    /// completion is refused) and its worker drops it within a second.
    Cancel,
}

/// Job counts by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StateCounts {
    /// Waiting and due.
    pub pending: u64,
    /// Waiting, not yet due.
    pub scheduled: u64,
    /// Running.
    pub running: u64,
    /// Done (the kept counts: never a count of rows).
    pub done: u64,
    /// Dead.
    pub dead: u64,
    /// Discarded.
    pub discarded: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl StateCounts {
    fn add(&mut self, status: JobStatus, count: u64) {
        let slot = match status {
            JobStatus::Pending => &mut self.pending,
            JobStatus::Scheduled => &mut self.scheduled,
            JobStatus::Running => &mut self.running,
            JobStatus::Done => &mut self.done,
            JobStatus::Dead => &mut self.dead,
            JobStatus::Discarded => &mut self.discarded,
            JobStatus::Cancelled => &mut self.cancelled,
        };
        *slot += count;
    }
}

/// One queue's counts, whether it is paused, and how long its oldest due job has waited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Its jobs by state.
    #[serde(flatten)]
    pub counts: StateCounts,
    /// Whether an operator paused it.
    pub paused: bool,
    /// How long its oldest due job has waited, in milliseconds; `None` when none is due.
    pub oldest_due_ms: Option<u64>,
}

/// The jobs by queue and by handler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Overview {
    /// By queue name.
    pub queues: BTreeMap<String, QueueCounts>,
    /// By handler name.
    pub handlers: BTreeMap<String, StateCounts>,
}

impl Overview {
    /// The overview from the stores' rows: (queue, handler, word, count, oldest due time), and
    /// the queues an operator paused or resumed, judged at `now`.
    pub(crate) fn from_rows(
        rows: Vec<OverviewRow>,
        queues: Vec<(String, bool)>,
        now: i64,
    ) -> Overview {
        let mut overview = Overview::default();
        for (queue, handler, word, count, oldest_due) in rows {
            let Ok(status) = word.parse::<JobStatus>() else {
                continue;
            };
            let count = count.max(0) as u64;
            let entry = overview.queues.entry(queue).or_default();
            entry.counts.add(status, count);
            if let Some(due) = oldest_due {
                let waited = now.saturating_sub(due).max(0) as u64;
                entry.oldest_due_ms = entry.oldest_due_ms.max(Some(waited));
            }
            overview
                .handlers
                .entry(handler)
                .or_default()
                .add(status, count);
        }
        for (queue, paused) in queues {
            overview.queues.entry(queue).or_default().paused = paused;
        }
        overview
    }
}

/// A row of the counts: (queue, handler, word, count, oldest due time).
pub(crate) type OverviewRow = (String, String, String, i64, Option<i64>);

/// The counts' rows and the queues an operator paused or resumed: what the stores read for an
/// [`Overview`].
pub(crate) type OverviewRows = (Vec<OverviewRow>, Vec<(String, bool)>);

/// A listed row as the stores read it: (id, handler, queue, word, attempt, max attempts, due
/// at, last error).
pub(crate) type ListedRow = (i64, String, String, String, i64, i64, i64, Option<String>);

impl JobSummary {
    pub(crate) fn from_row(
        (id, handler, queue, word, attempt, max_attempts, due_at, last_error): ListedRow,
    ) -> JobSummary {
        JobSummary {
            id,
            handler,
            queue,
            state: word.parse().unwrap_or(JobStatus::Dead),
            attempt: attempt.max(0) as u32,
            max_attempts: max_attempts.max(0) as u32,
            due_at,
            last_error,
        }
    }
}

/// A job's last claim, as its row keeps it: what a successful attempt's record is made of.
pub(crate) struct LastClaim {
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) worker: Option<String>,
}

impl JobDetail {
    /// The job from its row: the attempts its failures recorded, and for a done job the
    /// attempt that succeeded, from its last claim (completions write no history of their own).
    pub(crate) fn from_row(
        row: ListedRow,
        payload: String,
        attempts: Option<String>,
        last: LastClaim,
    ) -> JobDetail {
        let summary = JobSummary::from_row(row);
        let mut attempts: Vec<Attempt> = attempts
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        if summary.state == JobStatus::Done {
            attempts.push(Attempt {
                started_at: last.started_at,
                duration_ms: last.started_at.zip(last.finished_at).map(|(s, f)| f - s),
                worker: last.worker,
                error: None,
            });
        }
        JobDetail {
            summary,
            payload,
            attempts,
        }
    }
}

/// How many jobs one statement of an operator's action changes at most.
pub(crate) const ACTION_CHUNK: i64 = 1_000;

/// After a chunk of an action over a filter changed (or would change) `ids`: the cursor of the
/// next chunk, or `None` when this one was the last (it was not full).
pub(crate) fn next_chunk(ids: &[i64]) -> Option<i64> {
    match ids.iter().max() {
        Some(&last) if ids.len() as i64 == ACTION_CHUNK => Some(last),
        _ => None,
    }
}

impl<'a> Selection<'a> {
    /// The jobs of `filter` with an id above `after`, `limit` of them.
    pub(crate) fn page(
        now: Option<crate::clock::Millis>,
        filter: &'a JobFilter,
        after: i64,
        limit: i64,
    ) -> Selection<'a> {
        Selection {
            now,
            after,
            ids: None,
            filter,
            limit,
        }
    }

    /// The jobs `ids` (at most [`ACTION_CHUNK`] of them), whatever else they are.
    pub(crate) fn ids(now: Option<crate::clock::Millis>, ids: &[i64]) -> Selection<'static> {
        static ANY: JobFilter = JobFilter {
            state: None,
            handler: None,
            queue: None,
        };
        Selection {
            now,
            after: i64::MIN,
            ids: Some(crate::lifecycle::ids_json(ids)),
            filter: &ANY,
            limit: ACTION_CHUNK,
        }
    }
}

/// The jobs an operator's listing or action looks at: its filter, the ids it names (`None`:
/// any), a cursor (ids after it) and a chunk's size, judged at `now` (`None`: the database's
/// clock on PostgreSQL, this process's on SQLite).
pub(crate) struct Selection<'a> {
    pub(crate) now: Option<crate::clock::Millis>,
    pub(crate) after: i64,
    /// A JSON array of ids.
    pub(crate) ids: Option<String>,
    pub(crate) filter: &'a JobFilter,
    pub(crate) limit: i64,
}
