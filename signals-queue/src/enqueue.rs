//! Enqueueing: what `notify` runs in place of a queued handler. It writes one job row through
//! the transaction in the signal's context, so the job commits or rolls back with the caller's
//! own writes.

use std::any::TypeId;
use std::cell::Cell;
use std::sync::{Condvar, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use signals_core::{BoxError, HandlerInfo, Signal};
use uuid::Uuid;

use crate::clock::Clock;
use crate::job::JobInfo;
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
#[diagnostic::on_unimplemented(
    message = "`notify` can't write the jobs of queued handlers into `{Self}`",
    label = "the context needs `signals_queue::Enqueue`",
    note = "implement `signals_queue::Enqueue` for the signal's context, returning its transaction: `impl Enqueue for {Self} {{ fn transaction(&self) -> &rusqlite::Connection {{ self.tx }} }}`"
)]
pub trait Enqueue {
    /// The connection of the open transaction the signal is notified in.
    fn transaction(&self) -> &rusqlite::Connection;
}

thread_local! {
    /// The event id of the `notify` whose queued handlers are running on this thread: the
    /// signal's type and address, and the id its first queued handler made.
    static EVENT: Cell<Option<(TypeId, usize, Uuid)>> = const { Cell::new(None) };
}

/// Wakes this process's workers when a job may have been written. The job is visible only
/// once the caller commits, so a woken worker that finds nothing looks again shortly.
pub(crate) static WAKE: Wake = Wake::new();

/// A generation counter and a condition variable: workers wait for the counter to move.
pub(crate) struct Wake {
    generation: Mutex<u64>,
    changed: Condvar,
}

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

/// Not public API. What `notify` runs for a queued handler: writes its job through the
/// context's transaction if `accepted` (its `when` filter, evaluated now).
#[doc(hidden)]
pub fn enqueue<S, C>(
    job: &'static JobInfo,
    signal: &S,
    ctx: &mut C,
    accepted: bool,
) -> Result<(), BoxError>
where
    S: Signal,
    C: Enqueue + ?Sized,
{
    let event_id = event_id(job, signal);
    if !accepted {
        return Ok(());
    }
    let payload = job.to_json(signal)?;
    let now = Clock::system().now();
    let path = signals_core::catalog().get::<S>().path();
    ctx.transaction()
        .prepare_cached(sqlite::ENQUEUE)?
        .execute((
            event_id.to_string(),
            path,
            job.name(),
            job.queue(),
            job.priority(),
            payload,
            job.max_attempts(),
            now,
        ))?;
    WAKE.notify();
    Ok(())
}

/// The event id shared by the jobs one `notify` writes: its first queued handler (in run
/// order) makes a UUIDv7, the others of the same notify reuse it.
fn event_id<S: Signal>(job: &JobInfo, signal: &S) -> Uuid {
    let key = (TypeId::of::<S>(), signal as *const S as usize);
    let first = signals_core::handlers::<S>()
        .find(|handler| handler.queue().is_some())
        .map(HandlerInfo::__function);
    EVENT.with(|event| match event.get() {
        Some((signal, address, id))
            if first != Some(job.function()) && (signal, address) == key =>
        {
            id
        }
        _ => {
            let id = Uuid::now_v7();
            event.set(Some((key.0, key.1, id)));
            id
        }
    })
}
