//! Enqueueing: what `notify` runs in place of a queued handler. It writes one job row through
//! the transaction in the signal's context, so the job commits or rolls back with the caller's
//! own writes.

use serde::Serialize;
use signals_core::{BoxError, Signal};

#[cfg(feature = "async")]
use crate::db::Tx;
use crate::job::Handler;
use crate::rows::JobRows;
#[cfg(feature = "sqlite")]
use crate::sqlite;
#[cfg(feature = "async")]
use crate::store;
#[cfg(feature = "sqlite")]
use crate::wake::WAKE;

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
    #[cfg(all(feature = "testing", feature = "sqlite"))]
    if crate::inline::active() {
        if !J::JOB.is_publish() {
            // As an in-process handler: its filter, then the function with the caller's context.
            return match J::accepts(signal, ctx) {
                true => J::call(signal, ctx),
                false => Ok(()),
            };
        }
        let rows = JobRows::only::<S, J>(signal, ctx)?;
        if !rows.rows.is_empty() {
            sqlite::enqueue(ctx.transaction(), &rows)?;
        }
        return Ok(());
    }
    let rows = JobRows::of::<S, J>(signal, ctx)?;
    if !rows.rows.is_empty() {
        sqlite::enqueue(ctx.transaction(), &rows)?;
        WAKE.notify();
    }
    Ok(())
}

#[cfg(feature = "async")]
/// Says where an asynchronous signal's context keeps its transaction, so that `notify_async`
/// writes the jobs of queued handlers in it. The async twin of [`Enqueue`](crate::Enqueue).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "postgres")] {
/// use signals_queue::{EnqueueAsync, Tx};
///
/// pub struct AppCtx<'a> {
///     pub tx: &'a mut sqlx::PgConnection,
/// }
///
/// impl EnqueueAsync for AppCtx<'_> {
///     fn transaction(&mut self) -> Tx<'_> {
///         Tx::from(&mut *self.tx)
///     }
/// }
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`notify_async` can't write the jobs of queued handlers into `{Self}`",
    label = "the context needs `signals_queue::EnqueueAsync`",
    note = "implement `signals_queue::EnqueueAsync` for the signal's context, returning its transaction: `fn transaction(&mut self) -> Tx<'_> {{ Tx::from(&mut *self.tx) }}`"
)]
pub trait EnqueueAsync {
    /// The connection of the open transaction the signal is notified in.
    fn transaction(&mut self) -> Tx<'_>;
}

#[cfg(feature = "async")]
/// What `notify_async` awaits in place of a queued handler `J` of an asynchronous signal: the
/// first queued handler writes every queued handler's job through the context's transaction,
/// in one statement ([`JobRows::of`]). The rows are made before the future, which borrows only
/// the transaction: the context's own lifetime does not enter the future's type.
pub(crate) fn enqueue_async<'s, S, J>(
    signal: &'s S,
    ctx: &'s mut S::Context<'_>,
) -> signals_core::__private::HandlerFuture<'s>
where
    S: Signal,
    for<'x> S::Context<'x>: EnqueueAsync,
    J: Handler<S>,
{
    let rows = JobRows::of::<S, J>(signal, ctx);
    let tx = ctx.transaction();
    signals_core::__private::HandlerFuture::from_or_box(async move {
        let rows = rows?;
        if rows.rows.is_empty() {
            return Ok(());
        }
        store::enqueue(tx, &rows).await?;
        // This process's workers that do not LISTEN (SQLite, or NOTIFY turned off) look soon.
        crate::wake::WAKE_ASYNC.notify_waiters();
        Ok(())
    })
}

/// Not public API. Used by generated code: a publishing function's message as JSON.
#[doc(hidden)]
pub fn to_message<M: Serialize>(message: &M) -> Result<String, BoxError> {
    Ok(serde_json::to_string(message)?)
}
