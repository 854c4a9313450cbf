//! A periodic signal as registered: its schedule, and how the leader fires one tick of it.
//!
//! `#[derive(Signal)] #[signal(every = "1h")]` (or `cron = "0 3 * * *"`) registers the signal
//! here. The leader builds the signal's value from the tick's time (the field marked
//! `#[signal(tick)]` gets it; every other field is `Default::default()`), builds its context
//! from a transaction of its own and its state, as it does for a job, and notifies it in that
//! transaction, which first recorded the tick: the handlers run as for any `notify` (queued
//! ones write their jobs), once per tick across the fleet.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signals_core::{BoxError, Signal, SignalInfo};

use crate::clock::Millis;
use crate::schedule::ScheduleSpec;
#[cfg(feature = "async")]
use crate::scope::{AsyncJobScope, FromJobAsync};
#[cfg(feature = "sqlite")]
use crate::scope::{FromJob, JobScope};

/// Not public API. Implemented by `#[derive(Signal)]` for a periodic signal: its value at a
/// tick.
#[doc(hidden)]
pub trait FromTick {
    /// The signal for the tick at `at`.
    fn from_tick(at: SystemTime) -> Self;
}

/// Not public API. Used by generated code: the tick's time as the `#[signal(tick)]` field's
/// type holds it (`SystemTime` itself, or any type `From<SystemTime>`: `jiff::Timestamp`,
/// `chrono::DateTime<Utc>`, `time::OffsetDateTime`).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the `#[signal(tick)]` field can't hold the tick's time: `{Self}` is not `From<SystemTime>`",
    label = "not `From<std::time::SystemTime>`",
    note = "give the field the type `std::time::SystemTime`, or a time type that converts from it"
)]
pub trait TickTime: From<SystemTime> {}

impl<T: From<SystemTime>> TickTime for T {}

/// Not public API. See [`TickTime`].
#[doc(hidden)]
pub fn tick_value<T: TickTime>(at: SystemTime) -> T {
    T::from(at)
}

/// Fires one tick on the thread worker: the signal for the tick (milliseconds since the
/// epoch), its context from the scope, `notify`.
#[cfg(feature = "sqlite")]
pub(crate) type SyncFire = for<'c> fn(Millis, JobScope<'c>) -> Result<(), BoxError>;

/// Fires one tick on the async worker, as [`SyncFire`] with `notify_async`.
#[cfg(feature = "async")]
pub(crate) type AsyncFire =
    for<'c> fn(Millis, AsyncJobScope<'c>) -> crate::db::BoxFuture<'c, Result<(), BoxError>>;

/// Not public API. Which worker fires a periodic signal, and how.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Fire(pub(crate) FireKind);

/// See [`Fire`].
#[derive(Clone, Copy)]
pub(crate) enum FireKind {
    /// A signal notified with `notify`: the thread worker (`Worker`) fires it.
    #[cfg(feature = "sqlite")]
    Sync(SyncFire),
    /// An asynchronous signal: the async worker (`AsyncWorker`) fires it.
    #[cfg(feature = "async")]
    Async(AsyncFire),
    /// No driver for its kind is enabled: nothing fires it.
    #[allow(dead_code)]
    None,
}

/// Not public API. A periodic signal as `#[derive(Signal)]` registers it.
#[doc(hidden)]
pub struct PeriodicInfo {
    spec: ScheduleSpec,
    signal: fn() -> &'static SignalInfo,
    fire: Fire,
}

impl PeriodicInfo {
    pub(crate) const fn new<S: Signal>(spec: ScheduleSpec, fire: Fire) -> PeriodicInfo {
        PeriodicInfo {
            spec,
            signal: signal_info::<S>,
            fire,
        }
    }

    /// The schedule as written.
    pub(crate) fn spec(&self) -> ScheduleSpec {
        self.spec
    }

    /// The signal's full path: the key of its ticks.
    pub(crate) fn path(&self) -> &'static str {
        (self.signal)().path()
    }

    pub(crate) fn fire(&self) -> FireKind {
        self.fire.0
    }
}

fn signal_info<S: Signal>() -> &'static SignalInfo {
    signals_core::catalog().get::<S>()
}

/// A tick's time as the signal's field takes it.
pub(crate) fn tick_time(tick: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(tick.max(0) as u64)
}

/// Fires the tick `tick` of the periodic signal `S` with the context built from `scope`.
#[cfg(feature = "sqlite")]
pub(crate) fn fire_sync<'c, S>(tick: Millis, scope: JobScope<'c>) -> Result<(), BoxError>
where
    S: signals_core::SyncSignal + FromTick,
    for<'x> S::Context<'x>: FromJob<'x>,
{
    let signal = S::from_tick(tick_time(tick));
    let mut ctx = <S::Context<'c> as FromJob<'c>>::from_job(scope)?;
    Ok(signals_core::notify(&signal, &mut ctx)?)
}

/// Fires the tick `tick` of the asynchronous periodic signal `S`.
#[cfg(feature = "async")]
pub(crate) fn fire_async<'c, S>(
    tick: Millis,
    scope: AsyncJobScope<'c>,
) -> crate::db::BoxFuture<'c, Result<(), BoxError>>
where
    S: Signal + FromTick + Send + Sync + 'static,
    for<'x> S::Context<'x>: FromJobAsync<'x> + Send,
{
    Box::pin(async move {
        let signal = S::from_tick(tick_time(tick));
        let mut ctx = <S::Context<'c> as FromJobAsync<'c>>::from_job(scope)?;
        Ok(signals_core::notify_async(&signal, &mut ctx).await?)
    })
}
