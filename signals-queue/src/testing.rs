//! A test kit for queued handlers (feature `testing`, for dev-dependencies): read back what a
//! `notify` enqueued, typed, and run queued handlers in place instead of through a worker.
//!
//! ```toml
//! [dev-dependencies]
//! signals-queue = { path = "../signals/signals-queue", features = ["testing"] }
//! ```
//!
//! - [`enqueued`] (rusqlite) and [`enqueued_async`] (sqlx): the jobs of a signal's queued
//!   handlers that wait to run, each with its signal decoded, read through any connection,
//!   the caller's open transaction included (a test can assert before it commits).
//! - [`run_queued_inline`] (signals notified with `notify`): while its guard lives, `notify`
//!   on this thread calls queued handlers as in-process handlers, with the caller's context,
//!   after their `when` filters; a handler's error fails the `notify` as an in-process
//!   handler's does. Publishing functions still write their messages.
//! - To drain what was enqueued, with the worker's transactions and retries, in the test's own
//!   process: `Worker::builder(path).state(…).build()?.run_until_idle()` (sync), or
//!   `AsyncWorker::builder(pool).state(…).build().await?.run_until_idle().await` (async, where
//!   this is the way to run queued handlers in a test: an `async fn` handler's future borrows
//!   the caller's context for a lifetime the queue's generic code cannot name, so
//!   `notify_async` does not run them in place).
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "sqlite")] {
//! use rusqlite::{Connection, Transaction};
//! use serde::{Deserialize, Serialize};
//! use signals_core::{notify, on, BoxError, Signal};
//! use signals_queue::{testing, Enqueue, FromJob, JobScope};
//!
//! pub struct Ctx<'a> {
//!     pub tx: &'a Transaction<'a>,
//! }
//! impl Enqueue for Ctx<'_> {
//!     fn transaction(&self) -> &Connection {
//!         self.tx
//!     }
//! }
//! impl<'c> FromJob<'c> for Ctx<'c> {
//!     fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
//!         Ok(Ctx { tx: job.transaction() })
//!     }
//! }
//!
//! #[derive(Signal, Serialize, Deserialize, Debug, PartialEq)]
//! #[signal(context = Ctx<'_>)]
//! pub struct UserSignedUp {
//!     pub email: String,
//! }
//!
//! #[on(UserSignedUp, queue = "email")]
//! fn send_welcome(signal: &UserSignedUp, ctx: &mut Ctx<'_>) -> rusqlite::Result<()> {
//!     ctx.tx.execute("INSERT INTO sent (email) VALUES (?1)", [&signal.email]).map(drop)
//! }
//!
//! let mut conn = Connection::open_in_memory()?;
//! signals_queue::migrate(&conn)?;
//! conn.execute("CREATE TABLE sent (email TEXT)", [])?;
//! let tx = conn.transaction()?;
//! let signal = UserSignedUp { email: "ada@example.com".into() };
//!
//! // Enqueued, not run: one job, on the `email` queue, carrying the signal.
//! notify(&signal, &mut Ctx { tx: &tx })?;
//! let jobs = testing::enqueued::<UserSignedUp>(&tx)?;
//! assert_eq!(jobs.len(), 1);
//! assert_eq!(jobs[0].queue, "email");
//! assert_eq!(jobs[0].signal, signal);
//!
//! // Run in place: no second job, the handler's row is written in the caller's transaction.
//! {
//!     let _inline = testing::run_queued_inline();
//!     notify(&signal, &mut Ctx { tx: &tx })?;
//! }
//! assert_eq!(testing::enqueued::<UserSignedUp>(&tx)?.len(), 1);
//! let sent: i64 = tx.query_row("SELECT COUNT(*) FROM sent", [], |row| row.get(0))?;
//! assert_eq!(sent, 1);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "sqlite")]
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use signals_core::Signal;
use uuid::Uuid;

use crate::error::Error;
use crate::registry::jobs;

/// A job a `notify` wrote that waits to run, with its signal decoded.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Enqueued<S> {
    /// The job's id.
    pub id: i64,
    /// The queued handler's job name (`module::function` unless renamed).
    pub handler: String,
    /// Its queue.
    pub queue: String,
    /// The signal, as the worker will decode it.
    pub signal: S,
    /// The id of the `notify` that wrote it, shared by the jobs it wrote.
    pub event_id: Uuid,
}

/// While it lives, `notify`'s queued handlers run inline on this thread; see
/// [`run_queued_inline`].
#[cfg(feature = "sqlite")]
#[must_use = "queued handlers run inline only while the guard lives"]
pub struct Inline {
    /// Tied to the thread whose `notify` it changes.
    _thread: PhantomData<*const ()>,
}

#[cfg(feature = "sqlite")]
impl Drop for Inline {
    fn drop(&mut self) {
        crate::inline::leave();
    }
}

/// Until the returned guard is dropped, `notify` on this thread calls the queued handlers of
/// signals notified with `notify` in place, as in-process handlers with the caller's context
/// (after their `when` filters), instead of writing their jobs; publishing functions still
/// write their messages. Guards nest. (`notify_async` is not affected: drain its jobs with
/// `AsyncWorker::run_until_idle`.)
#[cfg(feature = "sqlite")]
pub fn run_queued_inline() -> Inline {
    crate::inline::enter();
    Inline {
        _thread: PhantomData,
    }
}

use crate::job::WaitingRow as Row;

/// The rows of `S`'s queued (not publishing) handlers, decoded.
fn decode<S: DeserializeOwned + 'static>(rows: Vec<Row>) -> Result<Vec<Enqueued<S>>, Error> {
    let signal = std::any::TypeId::of::<S>();
    let queued: Vec<&str> = jobs()
        .filter(|job| job.signal_type() == signal && !job.is_publish())
        .map(|job| job.name())
        .collect();
    rows.into_iter()
        .filter(|(_, handler, ..)| queued.contains(&handler.as_str()))
        .map(|(id, handler, queue, payload, event_id)| {
            Ok(Enqueued {
                id,
                handler,
                queue,
                signal: serde_json::from_str(&payload)
                    .map_err(|error| Error::Payload { id, source: error })?,
                event_id: Uuid::parse_str(&event_id).unwrap_or_default(),
            })
        })
        .collect()
}

/// The waiting jobs of `S`'s queued handlers, oldest first, read through `conn` (a
/// transaction's connection sees its own uncommitted jobs).
///
/// # Errors
///
/// A database error, or a payload that does not decode as `S`.
#[cfg(feature = "sqlite")]
pub fn enqueued<S: Signal + DeserializeOwned>(
    conn: &rusqlite::Connection,
) -> Result<Vec<Enqueued<S>>, Error> {
    let name = signals_core::catalog().get::<S>().path();
    decode(crate::sqlite::waiting_of_signal(conn, name)?)
}

/// [`enqueued`] through sqlx, on either database: the waiting jobs of `S`'s queued handlers,
/// oldest first (`tx` may be the caller's open transaction).
///
/// # Errors
///
/// A database error, or a payload that does not decode as `S`.
#[cfg(feature = "async")]
pub async fn enqueued_async<S: Signal + DeserializeOwned>(
    tx: crate::db::Tx<'_>,
) -> Result<Vec<Enqueued<S>>, Error> {
    let name = signals_core::catalog().get::<S>().path();
    decode(crate::store::waiting_of_signal(tx, name).await?)
}
