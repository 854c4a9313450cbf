//! The queue's own signal: a job went dead. `#[on(JobDead)]` (thread worker) and
//! `#[on(AsyncJobDead)]` (async worker) handlers react to it as to any signal: alert, open a
//! ticket, compensate.
//!
//! The fleet's leader notifies it once per death, whichever path left the job dead (its last
//! attempt failed, its payload cannot run, it was rescued once too often), within a second:
//! in one transaction it marks the death announced (`announced_at`, the death's `finished_at`)
//! and notifies the signal, so a handler's writes and its queued handlers' jobs commit with
//! the mark, or the announcement is tried again a second later. A job retried and dead again
//! is announced again. The jobs of a `JobDead` handler that go dead are marked without being
//! announced: a failing handler of it never feeds itself. Discarded and cancelled jobs are
//! decisions, not deaths: they are not announced.
//!
//! The context is one the worker builds: a transaction of the leader's own and the state the
//! worker was given.

use serde::{Deserialize, Serialize};
use signals_core::Signal;

#[cfg(feature = "async")]
use crate::db::Tx;
use crate::scope::{MissingState, State};

/// A queued job went dead; see the [module](self) for when and how it is notified. The thread
/// worker's leader notifies it (`Worker`); see [`AsyncJobDead`] for the async worker's.
///
/// # Examples
///
/// ```
/// use signals_core::on;
/// use signals_queue::{JobDead, JobDeadCtx};
///
/// #[on(JobDead)]
/// fn page_the_on_call(dead: &JobDead, ctx: &mut JobDeadCtx<'_>) -> rusqlite::Result<()> {
///     ctx.transaction().execute(
///         "INSERT INTO incidents (job_id, handler, error) VALUES (?1, ?2, ?3)",
///         (dead.id, &dead.handler, &dead.error),
///     )?;
///     Ok(())
/// }
/// ```
#[cfg(feature = "sqlite")]
#[derive(Signal, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[signal(context = JobDeadCtx<'_>)]
#[non_exhaustive]
pub struct JobDead {
    /// The job's id.
    pub id: i64,
    /// Its handler's job name.
    pub handler: String,
    /// Its queue.
    pub queue: String,
    /// The attempts it had.
    pub attempt: u32,
    /// Its last error (or panic message), as recorded.
    pub error: String,
}

/// What a [`JobDead`] handler gets: the leader's transaction and the worker's state.
#[cfg(feature = "sqlite")]
pub struct JobDeadCtx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    state: &'a State,
}

#[cfg(feature = "sqlite")]
impl<'a> JobDeadCtx<'a> {
    /// The transaction the death is announced in: the handler's writes commit with it.
    pub fn transaction(&self) -> &'a rusqlite::Transaction<'a> {
        self.tx
    }

    /// A value of type `T` the worker was given (`WorkerBuilder::state`).
    ///
    /// # Errors
    ///
    /// [`MissingState`] if the worker was given no `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&'a T, MissingState> {
        self.state.get::<T>()
    }
}

#[cfg(feature = "sqlite")]
impl crate::enqueue::Enqueue for JobDeadCtx<'_> {
    fn transaction(&self) -> &rusqlite::Connection {
        self.tx
    }
}

#[cfg(feature = "sqlite")]
impl<'c> crate::scope::FromJob<'c> for JobDeadCtx<'c> {
    fn from_job(job: crate::scope::JobScope<'c>) -> Result<Self, signals_core::BoxError> {
        Ok(JobDeadCtx {
            tx: job.tx,
            state: job.state,
        })
    }
}

/// A queued job went dead, as the async worker's leader announces it (`AsyncWorker`); the
/// twin of [`JobDead`].
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "postgres")] mod doc {
/// use signals_core::on;
/// use signals_queue::{with_db, AsyncJobDead, AsyncJobDeadCtx};
///
/// #[on(AsyncJobDead)]
/// async fn open_an_incident(
///     dead: &AsyncJobDead,
///     ctx: &mut AsyncJobDeadCtx<'_>,
/// ) -> Result<(), sqlx::Error> {
///     let sql = "INSERT INTO incidents (job_id, handler, error) VALUES ($1, $2, $3)";
///     with_db!(ctx.transaction(), |conn| sqlx::query(sql)
///         .bind(dead.id)
///         .bind(&dead.handler)
///         .bind(&dead.error)
///         .execute(conn)
///         .await
///         .map(drop))
/// }
/// # }
/// ```
#[cfg(feature = "async")]
#[derive(Signal, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[signal(context = AsyncJobDeadCtx<'_>, asynchronous)]
#[non_exhaustive]
pub struct AsyncJobDead {
    /// The job's id.
    pub id: i64,
    /// Its handler's job name.
    pub handler: String,
    /// Its queue.
    pub queue: String,
    /// The attempts it had.
    pub attempt: u32,
    /// Its last error (or panic message), as recorded.
    pub error: String,
}

/// What an [`AsyncJobDead`] handler gets: the leader's transaction and the worker's state.
#[cfg(feature = "async")]
pub struct AsyncJobDeadCtx<'a> {
    tx: Tx<'a>,
    state: &'a State,
}

#[cfg(feature = "async")]
impl<'a> AsyncJobDeadCtx<'a> {
    /// The transaction the death is announced in: the handler's writes commit with it.
    pub fn transaction(&mut self) -> &mut Tx<'a> {
        &mut self.tx
    }

    /// A value of type `T` the worker was given (`AsyncWorkerBuilder::state`).
    ///
    /// # Errors
    ///
    /// [`MissingState`] if the worker was given no `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&'a T, MissingState> {
        self.state.get::<T>()
    }
}

#[cfg(feature = "async")]
impl crate::enqueue::EnqueueAsync for AsyncJobDeadCtx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

#[cfg(feature = "async")]
impl<'c> crate::scope::FromJobAsync<'c> for AsyncJobDeadCtx<'c> {
    fn from_job(job: crate::scope::AsyncJobScope<'c>) -> Result<Self, signals_core::BoxError> {
        Ok(AsyncJobDeadCtx {
            tx: job.tx,
            state: job.state,
        })
    }
}

use crate::job::DeathRow;

/// Announces the deaths of `rows` with the thread worker's `JobDead`: for each, in a
/// transaction of its own, marks it announced and (unless it is a `JobDead` handler's own job)
/// notifies the signal. A failure rolls that death's transaction back: it is tried again at
/// the next round.
#[cfg(feature = "sqlite")]
pub(crate) fn announce(
    conn: &mut rusqlite::Connection,
    rows: Vec<DeathRow>,
    state: &State,
) -> Result<usize, signals_core::BoxError> {
    let mut announced = 0;
    for (id, handler, queue, attempt, error, finished_at) in rows {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if !crate::sqlite::announce(&tx, id, finished_at)? {
            continue;
        }
        if !is_handler_of::<JobDead>(&handler) {
            let dead = JobDead {
                id,
                handler,
                queue,
                attempt: attempt.max(0) as u32,
                error: error.unwrap_or_default(),
            };
            let mut ctx = JobDeadCtx { tx: &tx, state };
            signals_core::notify(&dead, &mut ctx)?;
        }
        tx.commit()?;
        announced += 1;
    }
    Ok(announced)
}

/// Announces the deaths of `rows` with the async worker's `AsyncJobDead`, as [`announce`].
#[cfg(feature = "async")]
pub(crate) async fn announce_async(
    pool: &crate::db::Pool,
    rows: Vec<DeathRow>,
    state: &State,
) -> Result<usize, signals_core::BoxError> {
    let mut announced = 0;
    for (id, handler, queue, attempt, error, finished_at) in rows {
        let mut tx = pool.begin().await?;
        if !crate::store::announce(tx.tx(), id, finished_at).await? {
            continue;
        }
        if !is_handler_of::<AsyncJobDead>(&handler) {
            let dead = AsyncJobDead {
                id,
                handler,
                queue,
                attempt: attempt.max(0) as u32,
                error: error.unwrap_or_default(),
            };
            let mut ctx = AsyncJobDeadCtx { tx: tx.tx(), state };
            signals_core::notify_async(&dead, &mut ctx).await?;
        }
        tx.commit().await?;
        announced += 1;
    }
    Ok(announced)
}

/// Whether `handler` names a queued handler of the signal `S` linked into this program.
fn is_handler_of<S: Signal>(handler: &str) -> bool {
    crate::registry::jobs()
        .any(|job| job.name() == handler && job.signal_type() == std::any::TypeId::of::<S>())
}
