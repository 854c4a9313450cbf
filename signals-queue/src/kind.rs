//! How a queued handler plugs into `notify` and into a worker, chosen by its signal's kind: a
//! signal notified with `notify` writes its jobs through rusqlite and runs them on [`Worker`]
//! (threads); an asynchronous signal writes them through sqlx in `notify_async` and runs them
//! on `AsyncWorker` (tokio).
//!
//! [`Worker`]: crate::Worker

use signals_core::__private::QueuedThunk;
use signals_core::Signal;

#[cfg(any(feature = "sqlite", feature = "async"))]
use crate::job::{self, QueueSignal, RunKind};
use crate::job::{Handler, Run};
use crate::periodic::{Fire, FireKind, FromTick, PeriodicInfo};
use crate::schedule::ScheduleSpec;
#[cfg(feature = "sqlite")]
use crate::{
    enqueue::{self, Enqueue},
    scope::FromJob,
};
#[cfg(feature = "sqlite")]
use signals_core::{__private::SyncKind, SyncSignal};

/// Not public API. Implemented for `signals_core`'s two signal kinds: what `notify` runs in
/// place of the queued handler `J` of `S`, and how the worker runs its jobs.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the queued handler's signal `{S}` can't write or run jobs",
    label = "no queue driver for `{S}` among signals-queue's enabled features",
    note = "a signal notified with `notify` writes its jobs through rusqlite: enable the `sqlite` feature of `signals-queue` (on by default); a signal declared `#[signal(asynchronous)]` writes them through sqlx: enable `postgres` or `sqlx-sqlite`"
)]
pub trait Queued<S: Signal, J> {
    /// What `notify` runs in place of the handler: it writes the job.
    const THUNK: QueuedThunk<S>;
    /// How the worker runs a job of it.
    const RUN: Run;
}

#[cfg(feature = "sqlite")]
impl<S, J> Queued<S, J> for SyncKind
where
    S: QueueSignal + SyncSignal,
    for<'c> S::Context<'c>: Enqueue + FromJob<'c>,
    J: Handler<S>,
{
    const THUNK: QueuedThunk<S> =
        QueuedThunk::sync(|signal, ctx| enqueue::enqueue::<S, J>(signal, ctx));
    const RUN: Run = Run::new::<S, J>(
        RunKind::Sync(job::run::<S, J>, job::check_context::<S>),
        job::to_json::<S>,
    );
}

#[cfg(feature = "async")]
impl<S, J> Queued<S, J> for signals_core::__private::AsyncKind
where
    S: QueueSignal + signals_core::AsyncSignal + Send + Sync,
    for<'c> S::Context<'c>: crate::enqueue::EnqueueAsync + crate::scope::FromJobAsync<'c> + Send,
    J: Handler<S>,
{
    const THUNK: QueuedThunk<S> =
        QueuedThunk::asynchronous(|signal, ctx| crate::enqueue::enqueue_async::<S, J>(signal, ctx));
    const RUN: Run = Run::new::<S, J>(
        RunKind::Async(
            |payload, scope| Box::pin(crate::job::run_async::<S, J>(payload, scope)),
            crate::job::check_context_async::<S>,
        ),
        job::to_json::<S>,
    );
}

/// Not public API. Used by generated code: what `notify` runs in place of the queued handler
/// `J` of `S`, and how the worker runs its jobs. The one place generated code requires
/// [`Queued`], so that a missing piece is reported once.
#[doc(hidden)]
pub const fn queued<S, J>() -> (QueuedThunk<S>, Run)
where
    S: Signal,
    S::__Kind: Queued<S, J>,
{
    (
        <S::__Kind as Queued<S, J>>::THUNK,
        <S::__Kind as Queued<S, J>>::RUN,
    )
}

/// Not public API. Implemented for `signals_core`'s two signal kinds: what `notify` runs in
/// place of the publishing function `J` of `S` (it writes the message as a job).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the publishing function's signal `{S}` can't write jobs",
    label = "no queue driver for `{S}` among signals-queue's enabled features",
    note = "a signal notified with `notify` writes its jobs through rusqlite: enable the `sqlite` feature of `signals-queue` (on by default); a signal declared `#[signal(asynchronous)]` writes them through sqlx: enable `postgres` or `sqlx-sqlite`"
)]
pub trait Publishes<S: Signal, J> {
    /// What `notify` runs in place of the function: it writes the message's job.
    const THUNK: QueuedThunk<S>;
    /// How `notify` makes its row (a relay, not a worker, sends it).
    const RUN: Run;
}

#[cfg(feature = "sqlite")]
impl<S, J> Publishes<S, J> for SyncKind
where
    S: SyncSignal,
    for<'c> S::Context<'c>: Enqueue,
    J: Handler<S>,
{
    const THUNK: QueuedThunk<S> =
        QueuedThunk::sync(|signal, ctx| enqueue::enqueue::<S, J>(signal, ctx));
    const RUN: Run = Run::publish::<S, J>();
}

#[cfg(feature = "async")]
impl<S, J> Publishes<S, J> for signals_core::__private::AsyncKind
where
    S: signals_core::AsyncSignal,
    for<'c> S::Context<'c>: crate::enqueue::EnqueueAsync,
    J: Handler<S>,
{
    const THUNK: QueuedThunk<S> =
        QueuedThunk::asynchronous(|signal, ctx| crate::enqueue::enqueue_async::<S, J>(signal, ctx));
    const RUN: Run = Run::publish::<S, J>();
}

/// Not public API. Used by generated code: the publishing function `J` of `S`, as [`queued`]
/// for a queued handler.
#[doc(hidden)]
pub const fn published<S, J>() -> (QueuedThunk<S>, Run)
where
    S: Signal,
    S::__Kind: Publishes<S, J>,
{
    (
        <S::__Kind as Publishes<S, J>>::THUNK,
        <S::__Kind as Publishes<S, J>>::RUN,
    )
}

/// Not public API. Used by generated code: an `async fn` queued handler's signal must be
/// asynchronous.
#[doc(hidden)]
pub const fn require_async<S: signals_core::AsyncSignal>() {}

/// Not public API. Implemented for `signals_core`'s two signal kinds: which worker fires a
/// periodic signal `S`, and how (its context built as a job's).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the periodic signal `{S}` can't be fired by a worker",
    label = "needs a worker that can build its context",
    note = "a periodic signal notified with `notify` is fired by `Worker` (feature `sqlite`) and its context implements `signals_queue::FromJob`; one declared `#[signal(asynchronous)]` is fired by `AsyncWorker` (feature `postgres` or `sqlx-sqlite`) and its context implements `signals_queue::FromJobAsync`"
)]
pub trait Periodic<S: Signal> {
    /// How a worker fires one tick.
    const FIRE: Fire;
}

#[cfg(feature = "sqlite")]
impl<S> Periodic<S> for SyncKind
where
    S: SyncSignal + FromTick,
    for<'c> S::Context<'c>: FromJob<'c>,
{
    const FIRE: Fire = Fire(FireKind::Sync(crate::periodic::fire_sync::<S>));
}

#[cfg(feature = "async")]
impl<S> Periodic<S> for signals_core::__private::AsyncKind
where
    S: signals_core::AsyncSignal + FromTick + Send + Sync + 'static,
    for<'c> S::Context<'c>: crate::scope::FromJobAsync<'c> + Send,
{
    const FIRE: Fire = Fire(FireKind::Async(crate::periodic::fire_async::<S>));
}

/// Not public API. Used by generated code: the periodic signal `S` on `spec`, as the leader
/// fires it. The one place generated code requires [`Periodic`].
#[doc(hidden)]
pub const fn periodic<S>(spec: ScheduleSpec) -> PeriodicInfo
where
    S: Signal,
    S::__Kind: Periodic<S>,
{
    PeriodicInfo::new::<S>(spec, <S::__Kind as Periodic<S>>::FIRE)
}
