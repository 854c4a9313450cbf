//! Enqueueing: what `notify` runs in place of a queued handler. It writes one job row through
//! the transaction in the signal's context, so the job commits or rolls back with the caller's
//! own writes.

use std::any::TypeId;
#[cfg(feature = "sqlite")]
use std::sync::Condvar;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use signals_core::{BoxError, HandlerInfo, Signal};
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

/// One job row as `notify` writes it, through whichever driver the context's transaction uses.
pub(crate) struct JobRow {
    pub(crate) event_id: Uuid,
    pub(crate) signal: &'static str,
    pub(crate) job: &'static JobInfo,
    pub(crate) payload: String,
    pub(crate) now: crate::clock::Millis,
}

impl JobRow {
    /// The row the queued handler `J` of `S` writes for `signal`; `None` if its `when`
    /// filter declines it.
    pub(crate) fn new<S: Signal, J: Handler<S>>(
        signal: &S,
        ctx: &S::Context<'_>,
    ) -> Result<Option<JobRow>, BoxError> {
        let event_id = event_id::<S>(J::JOB, signal, ctx);
        if !J::accepts(signal, ctx) {
            return Ok(None);
        }
        let payload = match J::message(signal, ctx) {
            Some(message) => message?,
            None => J::JOB.to_json(signal)?,
        };
        Ok(Some(JobRow {
            event_id,
            signal: signals_core::catalog().get::<S>().path(),
            job: J::JOB,
            payload,
            now: Clock::system().now(),
        }))
    }
}

/// What `notify` runs in place of a queued handler `J` of a signal notified with `notify`:
/// writes its job through the context's transaction, if its filter accepts.
#[cfg(feature = "sqlite")]
pub(crate) fn enqueue<S, J>(signal: &S, ctx: &mut S::Context<'_>) -> Result<(), BoxError>
where
    S: Signal,
    for<'c> S::Context<'c>: Enqueue,
    J: Handler<S>,
{
    let Some(row) = JobRow::new::<S, J>(signal, ctx)? else {
        return Ok(());
    };
    let job = row.job;
    ctx.transaction()
        .prepare_cached(sqlite::ENQUEUE)?
        .execute((
            row.event_id.to_string(),
            row.signal,
            job.name(),
            job.queue(),
            job.priority(),
            row.payload,
            job.max_attempts(),
            row.now,
        ))?;
    WAKE.notify();
    Ok(())
}

/// The event ids of the `notify`s now writing jobs, by signal type, signal address and context
/// address (the context is borrowed mutably for the whole `notify`, so no two running
/// `notify`s share one), with the id their first queued handler made.
static EVENTS: Mutex<Vec<(TypeId, usize, usize, Uuid)>> = Mutex::new(Vec::new());

/// The event id shared by the jobs one `notify` writes: its first queued handler (in run
/// order) makes a UUIDv7, the others reuse it, and the last forgets it. (A `notify` that stops
/// early at a failing handler leaves its entry until the next `notify` of that signal at those
/// addresses replaces it.)
fn event_id<S: Signal>(job: &JobInfo, signal: &S, ctx: &S::Context<'_>) -> Uuid {
    let key = (
        TypeId::of::<S>(),
        signal as *const S as usize,
        ctx as *const S::Context<'_> as *const () as usize,
    );
    let mut queued = signals_core::handlers::<S>().filter(|handler| handler.__writes_job());
    let first = queued.next().map(HandlerInfo::__function);
    let last = queued.next_back().map(HandlerInfo::__function).or(first);
    let is_first = first == Some(job.function()) || first.is_none();
    let is_last = last == Some(job.function()) || last.is_none();
    let mut events = EVENTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let found = events.iter().position(|&(t, s, c, _)| (t, s, c) == key);
    let id = match found {
        Some(i) if !is_first => events[i].3,
        _ => Uuid::now_v7(),
    };
    match (found, is_last) {
        (Some(i), true) => {
            events.swap_remove(i);
        }
        (Some(i), false) => events[i].3 = id,
        (None, false) => events.push((key.0, key.1, key.2, id)),
        (None, true) => {}
    }
    id
}

/// Not public API. Used by generated code: a publishing function's message as JSON.
#[doc(hidden)]
pub fn to_message<M: Serialize>(message: &M) -> Result<String, BoxError> {
    Ok(serde_json::to_string(message)?)
}
