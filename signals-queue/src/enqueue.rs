//! Enqueueing: what `notify` runs in place of a queued handler. It writes one job row through
//! the transaction in the signal's context, so the job commits or rolls back with the caller's
//! own writes.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;
#[cfg(feature = "sqlite")]
use std::sync::{Condvar, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use signals_core::{BoxError, Signal};
use uuid::Uuid;

use crate::clock::Clock;
use crate::job::{Handler, JobInfo};
#[cfg(feature = "sqlite")]
use crate::sqlite;

/// Says where a context's transaction is, so that `notify` can write the jobs of queued
/// handlers in it. Implement it once per context type of a signal with a queued handler.
///
/// Begin that transaction `IMMEDIATE` (`conn.transaction_with_behavior(
/// TransactionBehavior::Immediate)`): SQLite has one writer, and a deferred transaction that
/// reads first and writes later fails with `SQLITE_BUSY` at once, without waiting, when another
/// connection (a worker completing a job, say) wrote in between.
///
/// # Examples
///
/// ```
/// use signals_queue::Enqueue;
///
/// pub struct AppCtx<'a> {
///     pub tx: &'a rusqlite::Transaction<'a>,
/// }
///
/// impl Enqueue for AppCtx<'_> {
///     fn transaction(&self) -> &rusqlite::Connection {
///         self.tx
///     }
/// }
/// ```
#[cfg(feature = "sqlite")]
#[diagnostic::on_unimplemented(
    message = "`notify` can't write the jobs of queued handlers into `{Self}`",
    label = "the context needs `signals_queue::Enqueue`",
    note = "implement `signals_queue::Enqueue` for the signal's context, returning its transaction: `impl Enqueue for {Self} {{ fn transaction(&self) -> &rusqlite::Connection {{ self.tx }} }}`"
)]
pub trait Enqueue {
    /// The connection of the open transaction the signal is notified in.
    fn transaction(&self) -> &rusqlite::Connection;
}

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

/// A signal that can have queued handlers: its jobs store it as JSON, so it is
/// `serde::Serialize` and `serde::Deserialize`. Implemented for every such signal.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has a queued handler, so it must be `serde::Serialize` and `serde::Deserialize`",
    label = "`{Self}` is not serializable",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}`: its jobs store it as JSON"
)]
pub trait QueueSignal: Signal + Serialize + DeserializeOwned {}

impl<S: Signal + Serialize + DeserializeOwned> QueueSignal for S {}

/// The job rows one `notify` writes, through whichever driver the context's transaction uses:
/// one per queued (or publishing) handler whose `when` filter accepts, all with one event id.
pub(crate) struct JobRows {
    pub(crate) event_id: Uuid,
    /// The signal's path, for the `signal` column.
    pub(crate) signal: &'static str,
    /// The writer's clock (`created_at` on SQLite; PostgreSQL's own clock writes it there).
    pub(crate) now: crate::clock::Millis,
    pub(crate) rows: Vec<(&'static JobInfo, String)>,
}

impl JobRows {
    /// The rows of a `notify` of `signal`, made at its first queued handler `J` (in run order)
    /// for every queued handler of `S`, so that one statement writes them all: the later ones'
    /// filters are asked then, and their own turn writes nothing. Empty for those.
    pub(crate) fn of<S: Signal, J: Handler<S>>(
        signal: &S,
        ctx: &S::Context<'_>,
    ) -> Result<JobRows, BoxError> {
        let mut rows = JobRows {
            event_id: Uuid::now_v7(),
            signal: signals_core::catalog().get::<S>().path(),
            now: Clock::system().now(),
            rows: Vec::new(),
        };
        let mut queued = signals_core::handlers::<S>().filter(|handler| handler.__writes_job());
        match queued.next() {
            Some(first) if first.__function() != J::JOB.function() => return Ok(rows),
            Some(first) => {
                for handler in std::iter::once(first).chain(queued) {
                    let job = job_of(TypeId::of::<S>(), handler.__function())
                        .ok_or("a queued handler is missing from the table of jobs")?;
                    if let Some(payload) = job.row(signal, ctx)? {
                        rows.rows.push((job, payload));
                    }
                }
            }
            // Not in the signal's table (it cannot happen): write this handler's own row.
            None => {
                if let Some(payload) = J::JOB.row(signal, ctx)? {
                    rows.rows.push((J::JOB, payload));
                }
            }
        }
        Ok(rows)
    }
}

/// Several rows as the SQLite `ENQUEUE_MANY` reads them: a JSON array of
/// `[handler, queue, priority, payload, max_attempts]`.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "sqlx-sqlite")),
    allow(dead_code)
)]
pub(crate) fn rows_json(rows: &[(&'static JobInfo, String)]) -> String {
    let rows: Vec<_> = rows
        .iter()
        .map(|(job, payload)| {
            (
                job.name(),
                job.queue(),
                job.priority(),
                payload,
                job.max_attempts(),
            )
        })
        .collect();
    serde_json::to_string(&rows).expect("rows serialize")
}

/// The job of the queued handler `function` of the signal `signal`: a map built once.
fn job_of(signal: TypeId, function: TypeId) -> Option<&'static JobInfo> {
    static BY_HANDLER: OnceLock<HashMap<(TypeId, TypeId), &'static JobInfo>> = OnceLock::new();
    BY_HANDLER
        .get_or_init(|| {
            crate::jobs()
                .map(|job| ((job.signal_type(), job.function()), job))
                .collect()
        })
        .get(&(signal, function))
        .copied()
}

/// What `notify` runs in place of a queued handler `J` of a signal notified with `notify`: the
/// first queued handler writes every queued handler's job through the context's transaction,
/// in one statement ([`JobRows::of`]).
#[cfg(feature = "sqlite")]
pub(crate) fn enqueue<S, J>(signal: &S, ctx: &mut S::Context<'_>) -> Result<(), BoxError>
where
    S: Signal,
    for<'c> S::Context<'c>: Enqueue,
    J: Handler<S>,
{
    let rows = JobRows::of::<S, J>(signal, ctx)?;
    if !rows.rows.is_empty() {
        sqlite::enqueue(ctx.transaction(), &rows)?;
        WAKE.notify();
    }
    Ok(())
}

/// Not public API. Used by generated code: a publishing function's message as JSON.
#[doc(hidden)]
pub fn to_message<M: Serialize>(message: &M) -> Result<String, BoxError> {
    Ok(serde_json::to_string(message)?)
}
