//! The queue rung of `signals`: the same handler, run later by a worker, from a job written in
//! the caller's transaction.
//!
//! Add `queue` to a handler's `#[on]` and its code stays as it is; `notify` then writes a job
//! row for it through the transaction in the signal's context instead of calling it, so the job
//! commits or rolls back with the caller's own writes. A [`Worker`] runs it after commit, in a
//! transaction of the job's own that also marks the job done, and retries it with backoff
//! when it fails.
//!
//! ```ignore
//! #[on(OrderCreated, queue = "email", max_attempts = 5)]
//! fn send_welcome_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), MailError> {
//!     ctx.mailer.send(&sig.customer_email, "Thanks for your order")
//! }
//! ```
//!
//! What the application provides, once per context type:
//!
//! - [`Enqueue`]: where the context's transaction is, for `notify` to write jobs into;
//! - [`FromJob`]: how the worker builds the context from its own transaction and the state
//!   it was given ([`WorkerBuilder::state`]).
//!
//! A signal with a queued handler must be `serde::Serialize + Deserialize`: the job stores it
//! as JSON, readable with SQL.
//!
//! # Guarantees
//!
//! The [life cycle](lifecycle) in short (the long form is `docs/queue.md` in the repository):
//!
//! - A rolled-back `notify` leaves no job; a committed one leaves one job per queued handler,
//!   written in one statement (filters are evaluated when it is written), sharing one event id
//!   (a UUIDv7).
//! - A handler's database writes through the job's transaction happen exactly once: they
//!   commit together with the job's completion. Everything else it does happens at least once.
//! - A worker claims for its free slots and starts each job at once (the async worker fetches
//!   a few ahead while jobs are shorter than a claim: `fetch_ahead`); every transition is
//!   one statement conditional on the claim's token, so a worker that lost its lease can neither
//!   complete nor fail the job.
//! - Leases belong to workers, renewed every third of the lease until the worker has finished;
//!   a dead worker's jobs are rescued, charged the attempt they crashed in, and then run alone,
//!   so a job that kills its worker every time condemns only itself.
//! - A failed attempt (an error, a panic, a timeout) is retried after an exponential backoff
//!   with full jitter; after `max_attempts` (default 25) the job is `dead`, kept with its error,
//!   until [`Queue::retry_dead`]. A payload that no longer deserializes is retried for the
//!   worker's `payload_grace`, then dead.
//!
//! # Two paths, one table
//!
//! - **Sync**: a signal notified with `notify` writes its jobs through rusqlite (`Enqueue`);
//!   `Worker` (threads) runs them (`FromJob`). SQLite only; the default feature `sqlite`
//!   (without it, nothing of rusqlite or SQLite's C code is compiled).
//! - **Async**: a signal declared `#[signal(asynchronous)]` writes its jobs in `notify_async`
//!   through an sqlx transaction on PostgreSQL or SQLite (`EnqueueAsync`, features `postgres`
//!   and `sqlx-sqlite`); `AsyncWorker` (tokio) runs them (`FromJobAsync`), waking on
//!   PostgreSQL's LISTEN/NOTIFY; a job's transaction is begun at the handler's first use of it.
//!   Queued handlers of asynchronous signals may be `async fn`s.
//!
//! Both follow the same life cycle on the same table.
//!
//! # The broker rung
//!
//! `#[on(S, publish = "subject")]` marks a function that projects the signal into a thin message
//! (`fn(&S) -> M`, `M: Serialize`): `notify` runs it and writes the message as a job, the
//! outbox; the `signals-broker` crate's `Relay` publishes it to NATS JetStream after commit,
//! and its `Subscriber` consumes a subject as a signal in another service, once per message.
//!
//! # Layers
//!
//! The modules, bottom to top. Each names (by a `crate::` or `super::` path) only modules of
//! the layers below its own, so the crate has no import circle; `tests/layers.rs` reads this
//! list and every path in the sources, and fails on a module missing from it or naming one
//! at its own layer or above.
//!
//! 1. `error`, `clock`, `verdict`: errors; time; what a handler's error can ask for (snooze,
//!    discard).
//! 2. `timing`, `wake`, `inline`: the timings every claimer shares, with their defaults; the
//!    in-process wake-up that `notify` gives workers; the test kit's switch that runs queued
//!    handlers in place.
//! 3. `db`: connections through sqlx (pool, transaction, a job's lazy transaction).
//! 4. `scope`, `lifecycle`, `leader`, `schedule`: what a handler's context is built from; the
//!    life cycle's data and rules (claims, failures, orphans, leases), the fleet leader's
//!    lease, and when periodic signals tick, without I/O.
//! 5. `job`, `periodic`, `ops`: a queued handler as registered, the states of its jobs, how a
//!    job runs; a periodic signal as registered, how a tick fires; the operator's view of jobs
//!    (states, filters, attempts, counts by queue).
//! 6. `trace`, `meter`, `sqlite_sql`, `sqlite_ops`, `postgres`, `postgres_ops`: tracing;
//!    metrics; each database's schema and SQL text (the life cycle's, the operator's).
//! 7. `registry`: the handlers linked into the program, and the lanes a worker claims them in.
//! 8. `rows`: the rows one `notify` writes.
//! 9. `sqlite_bind`: each SQLite statement with its arguments, and the reading of its rows,
//!    for both drivers.
//! 10. `sqlite`, `store`: the stores, every statement run (rusqlite; sqlx on either database).
//! 11. `enqueue`, `outcome`: `notify` writing jobs in the caller's transaction; what either
//!     worker does once the database answered for a job (counters, tracing, jobs in flight).
//! 12. `kind`, `with_db`, `admin`, `testing`, `dead`: the entry points of generated code; the
//!     operator's calls; the test kit; the queue's own signal of a dead job.
//! 13. `async_worker::maintenance`, `async_worker::notifier`, `async_worker::leader`: leases,
//!     rescues, reconciliation; LISTEN; the fleet's leadership and periodic signals.
//! 14. `async_worker::shared`: what the async worker's tasks share.
//! 15. `async_worker::executor`, `async_worker::completer`: one job; batched completions.
//! 16. `async_worker::producer`: a lane's fetching for its free slots (and a few ahead).
//! 17. `async_worker`, `worker`: the async and thread workers.

// Without a driver feature (`sqlite`, `postgres`, `sqlx-sqlite`) the crate compiles, and
// nothing can use what the drivers share.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "async")),
    allow(dead_code, unused_imports)
)]

#[cfg(all(
    feature = "async",
    not(any(feature = "postgres", feature = "sqlx-sqlite"))
))]
compile_error!("signals-queue's async path needs a driver: enable `postgres` and/or `sqlx-sqlite`");

mod admin;
#[cfg(feature = "async")]
mod async_worker;
mod clock;
#[cfg(feature = "async")]
mod db;
mod dead;
mod enqueue;
mod error;
#[cfg(all(feature = "testing", feature = "sqlite"))]
mod inline;
mod job;
mod kind;
mod leader;
pub mod lifecycle;
mod meter;
mod ops;
mod outcome;
mod periodic;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_ops;
mod registry;
mod rows;
mod schedule;
mod scope;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "sqlx-sqlite"))]
mod sqlite_bind;
#[cfg(any(feature = "sqlite", feature = "sqlx-sqlite"))]
mod sqlite_ops;
mod sqlite_sql;
#[cfg(feature = "async")]
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod timing;
mod trace;
mod verdict;
mod wake;
#[cfg(feature = "async")]
mod with_db;
#[cfg(feature = "sqlite")]
mod worker;

pub use crate::admin::{DeadJob, HandlerStats, Stats};
pub use crate::clock::Clock;
#[cfg(feature = "async")]
pub use crate::dead::{AsyncJobDead, AsyncJobDeadCtx};
#[cfg(feature = "sqlite")]
pub use crate::dead::{JobDead, JobDeadCtx};
pub use crate::error::Error;
pub use crate::job::{JobInfo, JobState, QueueSignal};
pub use crate::lifecycle::WorkerStats;
pub use crate::ops::{
    Action, Attempt, JobDetail, JobFilter, JobStatus, JobSummary, Overview, QueueCounts,
    StateCounts,
};
pub use crate::registry::{jobs, SIGNALS_QUEUE_0_1_JOBS};
pub use crate::scope::MissingState;
pub use crate::timing::{Retention, RetryPolicy, Timing};
pub use crate::verdict::{Discard, Snooze};
#[cfg(feature = "async")]
pub use crate::{
    admin::AsyncQueue,
    async_worker::{AsyncWorker, AsyncWorkerBuilder, RunningAsyncWorker},
    db::{Pool, Transaction, Tx, WrongDatabase},
    enqueue::EnqueueAsync,
    scope::{AsyncJobScope, FromJobAsync},
};
#[cfg(feature = "sqlite")]
pub use crate::{
    admin::Queue,
    enqueue::Enqueue,
    scope::{FromJob, JobScope},
    sqlite::migrate,
    worker::{RunningWorker, Worker, WorkerBuilder},
};

/// The sqlx this crate is built against (0.9): name its types through this path (or depend on
/// the same version) so that a `Pool`, a `Transaction` or a row type of yours is the one the
/// queue takes. Two sqlx versions in one build are two sets of types that do not mix.
#[cfg(feature = "async")]
pub use sqlx;

/// The rusqlite this crate is built against (0.39, SQLite bundled): a `Connection` or
/// `Transaction` handed to [`Enqueue`] and [`FromJob`] must be this one's.
#[cfg(feature = "sqlite")]
pub use rusqlite;

/// Not public API: the queue's internals that the broker rung (`signals-broker`) builds on. No
/// stability promise; everything here may change in any release.
#[cfg(feature = "async")]
#[doc(hidden)]
pub mod __broker {
    pub use crate::async_worker::{listen, maintain, Upkeep};
    pub use crate::db::OwnedConn;
    use crate::db::Pool;
    pub use crate::lifecycle::{ClaimRequest, Claimed, Failure, InFlight, LeaseClock};
    pub use crate::scope::State;
    pub use crate::store::{
        busy, check_schema, check_session, claim, complete_many, fail, heartbeat, inbox_counts,
        inbox_insert, inbox_prune, savepoint, InboxRow,
    };
    pub use crate::wake::WAKE_ASYNC as WAKE;

    /// Whether a failed claim's reply may have been lost after the server committed it.
    pub fn reply_lost(error: &sqlx::Error) -> bool {
        crate::lifecycle::reply_lost(error)
    }

    /// A fresh claim token.
    pub fn token() -> i64 {
        crate::lifecycle::token()
    }

    /// A fresh worker id, for a relay's lease.
    pub fn worker_id() -> i64 {
        crate::lifecycle::worker_id()
    }

    /// The backoff after failed attempt `attempt`, in milliseconds.
    pub fn retry_delay(policy: &crate::RetryPolicy, attempt: u32) -> i64 {
        crate::lifecycle::retry_delay(policy, attempt)
    }

    /// A manual clock's time, or `None` (the database's clock decides).
    pub fn fixed_now(clock: &crate::Clock) -> Option<i64> {
        clock.fixed()
    }
    use crate::registry::LinkedJobs;
    use crate::{AsyncJobScope, Error, JobInfo, Tx};

    /// A pooled connection, outside any transaction.
    pub async fn acquire(pool: &Pool) -> Result<OwnedConn, sqlx::Error> {
        pool.acquire().await
    }

    /// The publishing functions (or queued handlers) linked into this program that `keep`
    /// selects, by job name, and their names as the claim statements' JSON array.
    pub fn linked_jobs(keep: impl Fn(&JobInfo) -> bool) -> Result<LinkedJobs, Error> {
        crate::registry::linked_jobs(keep)
    }

    /// Reports a database error that will be retried (a `tracing` event with that feature).
    pub fn database_error(during: &str, error: &Error) {
        crate::trace::database_error(during, error);
    }

    /// A caught panic's message.
    pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
        crate::error::AttemptError::panic(panic).to_string()
    }

    /// The scope a handler's context is built from, for a message instead of a job.
    pub fn scope<'c>(
        tx: Tx<'c>,
        state: &'c State,
        id: i64,
        event_id: uuid::Uuid,
        attempt: u32,
    ) -> AsyncJobScope<'c> {
        AsyncJobScope {
            tx,
            state,
            job_id: id,
            event_id,
            attempt,
        }
    }

    pub use crate::store::{fail_many, running_of, JobFailure};
}

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::enqueue::to_message;
    pub use crate::job::{coalesce_key, coalesce_with, Handler, JobInfo, JobSpec, Run};
    pub use crate::kind::{
        periodic, published, queued, require_async, Periodic, Publishes, Queued,
    };
    pub use crate::periodic::{tick_value, FromTick, PeriodicInfo};
    pub use crate::registry::SIGNALS_QUEUE_0_1_JOBS as JOBS;
    pub use crate::registry::SIGNALS_QUEUE_0_1_PERIODIC as PERIODIC;
    pub use crate::schedule::ScheduleSpec;
    #[cfg(feature = "async")]
    pub use crate::with_db::{Either, IntoEither};
    pub use linkme::{self, distributed_slice};
}
