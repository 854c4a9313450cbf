//! A queued handler's job: what `#[on(S, queue)]` records about it, the states a job row goes
//! through, and how long a failed attempt waits before the next.

use std::any::{Any, TypeId};
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use signals_core::__private::HandlerFuture;
use signals_core::{BoxError, Signal};

use crate::error::AttemptError;
#[cfg(feature = "async")]
use crate::scope::{AsyncJobScope, FromJobAsync};
#[cfg(feature = "sqlite")]
use crate::scope::{FromJob, JobScope};

/// The states of a job row, and the one place their transitions are listed:
///
/// ```text
/// pending --claim--> running --complete--> done
///    ^                  |
///    +------fail--------+  (attempts left; after a backoff)
///    |                  +--fail-----> dead  (no attempts left, or a payload that cannot run)
///    +--rescue (lease expired)--+
/// dead --retry_dead--> pending
/// ```
///
/// Every transition is one SQL statement guarded by the state it expects and, from `running`,
/// by the lease token of the claim (`sqlite.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to be claimed, now or after `run_at`.
    Pending,
    /// Claimed by a worker whose lease has not expired.
    Running,
    /// Completed, in the same transaction as the handler's writes.
    Done,
    /// Out of attempts, or not runnable: kept with its last error until retried or purged.
    Dead,
}

impl JobState {
    /// The state as the `state` column stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    /// The state a `state` column holds.
    pub fn parse(text: &str) -> Option<JobState> {
        match text {
            // PostgreSQL splits pending in two: due (`available`) and not yet (`scheduled`).
            "pending" | "available" | "scheduled" => Some(JobState::Pending),
            "running" => Some(JobState::Running),
            "done" => Some(JobState::Done),
            "dead" => Some(JobState::Dead),
            _ => None,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// Not public API. A queued handler as `notify` and the worker see it: `#[on(S, queue)]`
/// implements it on a struct of its own.
#[doc(hidden)]
pub trait Handler<S: Signal>: 'static {
    /// The handler's registration in the program's table of jobs.
    const JOB: &'static JobInfo;

    /// Its `when` filter, asked when `notify` would write the job.
    #[inline]
    fn accepts(_signal: &S, _ctx: &S::Context<'_>) -> bool {
        true
    }

    /// The job's coalescing key (`#[on(S, queue, coalesce = product_id)]`): while a job of
    /// this handler with the same key has not started, `notify` writes no second one.
    #[inline]
    fn coalesce(_signal: &S) -> Option<String> {
        None
    }

    /// A publishing function's message as JSON (`#[on(S, publish = "subject")]`): the job's
    /// payload. `None` for a queued handler, whose payload is the signal.
    #[inline]
    fn message(_signal: &S, _ctx: &S::Context<'_>) -> Option<Result<String, BoxError>> {
        None
    }

    /// Calls a synchronous handler function with its shape adapted, as `notify` would have.
    fn call(_signal: &S, _ctx: &mut S::Context<'_>) -> Result<(), BoxError> {
        Err("an `async fn` handler runs on the async worker".into())
    }

    /// Calls the handler function, awaiting it if it is an `async fn`.
    fn call_async<'a, 'c: 'a>(signal: &'a S, ctx: &'a mut S::Context<'c>) -> HandlerFuture<'a>
    where
        S: Sync,
        S::Context<'c>: Send,
    {
        let result = Self::call(signal, ctx);
        HandlerFuture::from_or_box(std::future::ready(result))
    }
}

/// What a synchronous job row's handler name leads to: deserialize, build the context, call.
#[cfg(feature = "sqlite")]
pub(crate) type Runner = for<'c> fn(&str, JobScope<'c>) -> Result<(), AttemptError>;

/// Builds a synchronous handler's context from a scope and drops it: what `build()` checks.
#[cfg(feature = "sqlite")]
pub(crate) type ContextCheck = for<'c> fn(JobScope<'c>) -> Result<(), BoxError>;

/// Builds an asynchronous handler's context from a scope and drops it.
#[cfg(feature = "async")]
pub(crate) type AsyncContextCheck =
    for<'c> fn(crate::scope::AsyncJobScope<'c>) -> Result<(), BoxError>;

/// What an asynchronous job row's handler name leads to.
#[cfg(feature = "async")]
pub(crate) type AsyncRunner = for<'c> fn(
    &'c str,
    crate::scope::AsyncJobScope<'c>,
) -> crate::db::BoxFuture<'c, Result<(), AttemptError>>;

/// A queued handler's job payload for a signal in its context, type-erased so that the first
/// queued handler of a `notify` writes every queued handler's row: `None` if its filter
/// declines.
///
/// # Safety
///
/// The pointers are a `&S` and a `&&S::Context<'_>` (a context may be unsized: the reference
/// to it is passed by address) of the `S` that [`Run::signal`] names, valid for the call.
pub(crate) type RowFn = unsafe fn(*const (), *const ()) -> Result<Option<Row>, BoxError>;

/// What a job's row holds of one `notify`: its payload (the signal, or a publishing function's
/// message) and its coalescing key.
pub(crate) struct Row {
    pub(crate) payload: String,
    pub(crate) key: Option<String>,
}

/// Not public API. Used by generated code: a coalescing key (`coalesce = product_id`) as the
/// row stores it, its `Display` text.
#[doc(hidden)]
pub fn coalesce_key<K: std::fmt::Display + ?Sized>(key: &K) -> String {
    key.to_string()
}

/// Not public API. Used by generated code: the key `coalesce = |s| ...` makes of `signal`.
#[doc(hidden)]
pub fn coalesce_with<S, K: std::fmt::Display>(signal: &S, key: impl FnOnce(&S) -> K) -> String {
    key(signal).to_string()
}

/// Not public API. How the worker runs a job: on the thread-based worker over rusqlite for a
/// signal notified with `notify`, on the async worker over sqlx for an asynchronous one; and how
/// `notify` makes its row.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Run {
    kind: RunKind,
    /// The signal as JSON (a publishing function's jobs carry its message instead).
    to_json: fn(&dyn Any) -> serde_json::Result<String>,
    /// The job's payload (see [`RowFn`]).
    row: RowFn,
    /// The handler's signal type.
    signal: fn() -> TypeId,
    /// The handler's signal's full path, as job rows store it.
    signal_path: fn() -> &'static str,
}

/// `S`'s full path, as `notify` writes it in the `signal` column.
fn signal_path<S: Signal>() -> &'static str {
    signals_core::catalog().get::<S>().path()
}

impl Run {
    pub(crate) const fn new<S: Signal, J: Handler<S>>(
        kind: RunKind,
        to_json: fn(&dyn Any) -> serde_json::Result<String>,
    ) -> Run {
        Run {
            kind,
            to_json,
            row: row::<S, J>,
            signal: TypeId::of::<S>,
            signal_path: signal_path::<S>,
        }
    }

    /// A publishing function's jobs: a relay publishes their payload; no worker runs them.
    pub(crate) const fn publish<S: Signal, J: Handler<S>>() -> Run {
        Run::new::<S, J>(RunKind::Publish, |_| Ok(String::new()))
    }
}

/// The [`RowFn`] of the queued handler `J` of `S`.
///
/// # Safety
///
/// As for [`RowFn`]: `signal` is a `&S`, `ctx` a `&&S::Context<'_>`, valid for the call.
unsafe fn row<S: Signal, J: Handler<S>>(
    signal: *const (),
    ctx: *const (),
) -> Result<Option<Row>, BoxError> {
    // SAFETY: the caller passes a `&S` and a `&&S::Context<'_>` (checked against
    // `Run::signal`), borrowed for the duration of this call, which is all these references
    // live.
    let (signal, ctx) = unsafe { (&*signal.cast::<S>(), *ctx.cast::<&S::Context<'_>>()) };
    if !J::accepts(signal, ctx) {
        return Ok(None);
    }
    let payload = match J::message(signal, ctx) {
        Some(message) => message?,
        None => J::JOB.to_json(signal)?,
    };
    Ok(Some(Row {
        payload,
        key: J::coalesce(signal),
    }))
}

/// See [`Run`].
#[derive(Clone, Copy)]
pub(crate) enum RunKind {
    /// A handler of a `SyncSignal`.
    #[cfg(feature = "sqlite")]
    Sync(Runner, ContextCheck),
    /// A handler of an `AsyncSignal`.
    #[cfg(feature = "async")]
    Async(AsyncRunner, AsyncContextCheck),
    /// A publishing function: its message goes to the broker.
    Publish,
}

/// Not public API. One queued handler, as `#[on(S, queue)]` registers it in the program's table
/// of jobs: the worker claims only jobs whose handler is in its own table.
#[doc(hidden)]
pub struct JobInfo {
    /// The job's handler name: `name = "..."` if given, else the handler's full path.
    name: &'static str,
    queue: &'static str,
    max_attempts: u32,
    priority: i32,
    /// `timeout = "..."` in milliseconds; 0: the worker's default.
    timeout_ms: u64,
    /// `delay = "..."` in milliseconds; 0: due at once.
    delay_ms: u64,
    /// The handler function's identity (`signals_core::__private::function_id`).
    function: TypeId,
    file: &'static str,
    line: u32,
    run: Run,
}

/// Not public API. The constant parts of a [`JobInfo`], as `#[on]` writes them.
#[doc(hidden)]
pub struct JobSpec {
    /// See [`JobInfo::name`].
    pub name: &'static str,
    /// The queue; `"default"` for a bare `queue`.
    pub queue: &'static str,
    /// `max_attempts = N`, default 25.
    pub max_attempts: u32,
    /// The handler's `priority`: claims within a queue take higher first.
    pub priority: i32,
    /// `timeout = "30s"`, in milliseconds; 0 for the worker's default.
    pub timeout_ms: u64,
    /// `delay = "3d"`, in milliseconds; 0: due at once.
    pub delay_ms: u64,
    /// The handler function's identity.
    pub function: TypeId,
    /// Where the handler is declared.
    pub file: &'static str,
    /// The line of its `#[on]`.
    pub line: u32,
}

impl JobInfo {
    /// Not public API. Used by generated code.
    #[doc(hidden)]
    pub const fn new(spec: JobSpec, run: Run) -> JobInfo {
        JobInfo {
            name: spec.name,
            queue: spec.queue,
            max_attempts: spec.max_attempts,
            priority: spec.priority,
            timeout_ms: spec.timeout_ms,
            delay_ms: spec.delay_ms,
            function: spec.function,
            file: spec.file,
            line: spec.line,
            run,
        }
    }

    /// The name a job row stores to say which handler runs it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The queue the handler's jobs go to.
    pub fn queue(&self) -> &'static str {
        self.queue
    }

    /// How many attempts a job gets before it is dead.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The handler's priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// How long after the `notify` that writes it a job is due (`delay = "..."`); zero: at once.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    /// How long an attempt may run, if the handler sets `timeout = "..."`; otherwise the
    /// worker's default applies.
    pub fn timeout(&self) -> Option<Duration> {
        (self.timeout_ms > 0).then(|| Duration::from_millis(self.timeout_ms))
    }

    pub(crate) fn function(&self) -> TypeId {
        self.function
    }

    /// The type of the handler's signal.
    pub(crate) fn signal_type(&self) -> TypeId {
        (self.run.signal)()
    }

    /// The name of the handler's signal type, without its module path: a claim takes only rows
    /// of a signal of that name (moving the type to another module keeps its jobs).
    pub(crate) fn signal_name(&self) -> &'static str {
        let path = (self.run.signal_path)();
        path.rsplit("::").next().unwrap_or(path)
    }

    /// `file:line` of the handler's `#[on]`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// This job's row for `signal` in `ctx`: its payload and key, or `None` if its filter
    /// declines.
    ///
    /// # Panics
    ///
    /// If `S` is not this job's signal type (a bug: `notify` found the job by its handler).
    pub(crate) fn row<S: Signal>(
        &self,
        signal: &S,
        ctx: &S::Context<'_>,
    ) -> Result<Option<Row>, BoxError> {
        assert!(
            (self.run.signal)() == TypeId::of::<S>(),
            "job `{}` is not a handler of this signal",
            self.name
        );
        let signal: *const S = signal;
        let ctx: *const &S::Context<'_> = &ctx;
        // SAFETY: checked just above that this job's `RowFn` takes an `S`; the references
        // outlive the call.
        unsafe { (self.run.row)(signal.cast(), ctx.cast()) }
    }

    /// The payload of a job for `signal`, which is of this job's signal type.
    pub(crate) fn to_json(&self, signal: &dyn Any) -> serde_json::Result<String> {
        (self.run.to_json)(signal)
    }

    /// Deserializes the signal, builds the context and runs the handler, in `scope`'s
    /// transaction.
    #[cfg(feature = "sqlite")]
    pub(crate) fn run(&self, payload: &str, scope: JobScope<'_>) -> Result<(), AttemptError> {
        match self.run.kind {
            RunKind::Sync(run, _) => run(payload, scope),
            #[cfg(feature = "async")]
            RunKind::Async(..) => Err(AttemptError::WrongWorker(
                "its signal is asynchronous: run it with `AsyncWorker`",
            )),
            #[cfg(feature = "async")]
            RunKind::Publish => Err(AttemptError::WrongWorker(
                "it publishes a message: a relay sends it",
            )),
            #[cfg(not(feature = "async"))]
            RunKind::Publish => Ok(()),
        }
    }

    /// The async twin of [`run`](Self::run).
    #[cfg(feature = "async")]
    pub(crate) async fn run_async(
        &self,
        payload: &str,
        scope: crate::scope::AsyncJobScope<'_>,
    ) -> Result<(), AttemptError> {
        match self.run.kind {
            RunKind::Async(run, _) => run(payload, scope).await,
            #[cfg(feature = "sqlite")]
            RunKind::Sync(..) => Err(AttemptError::WrongWorker(
                "its signal is notified with `notify`: run it with `Worker`",
            )),
            RunKind::Publish => Err(AttemptError::WrongWorker(
                "it publishes a message: a relay sends it",
            )),
        }
    }

    /// Builds the handler's context from `scope` and drops it: a worker's `build()` finds a
    /// missing piece of state before the first job does.
    #[cfg(feature = "sqlite")]
    pub(crate) fn check_context(&self, scope: JobScope<'_>) -> Result<(), BoxError> {
        match self.run.kind {
            RunKind::Sync(_, check) => check(scope),
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }

    /// The async twin of [`check_context`](Self::check_context).
    #[cfg(feature = "async")]
    pub(crate) fn check_context_async(
        &self,
        scope: crate::scope::AsyncJobScope<'_>,
    ) -> Result<(), BoxError> {
        match self.run.kind {
            RunKind::Async(_, check) => check(scope),
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }

    /// Whether the thread-based worker runs this job (a queued handler of a sync signal).
    #[cfg(feature = "sqlite")]
    pub(crate) fn runs_on_worker(&self) -> bool {
        matches!(self.run.kind, RunKind::Sync(..))
    }

    /// Whether the async worker runs this job (a queued handler of an asynchronous signal).
    #[cfg(feature = "async")]
    pub(crate) fn runs_on_async_worker(&self) -> bool {
        matches!(self.run.kind, RunKind::Async(..))
    }

    /// Whether this is a publishing function's job: a relay publishes it to
    /// [`queue`](Self::queue), the subject.
    pub fn is_publish(&self) -> bool {
        matches!(self.run.kind, RunKind::Publish)
    }

    /// The signal's full path, as job rows store it.
    pub(crate) fn signal_path(&self) -> &'static str {
        (self.run.signal_path)()
    }

    /// What runs it, as `signals_handlers` records it: `sync` (the thread worker), `async`
    /// (the async worker) or `publish` (a relay).
    pub(crate) fn kind(&self) -> &'static str {
        match self.run.kind {
            #[cfg(feature = "sqlite")]
            RunKind::Sync(..) => "sync",
            #[cfg(feature = "async")]
            RunKind::Async(..) => "async",
            RunKind::Publish => "publish",
        }
    }
}

impl fmt::Debug for JobInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobInfo")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("max_attempts", &self.max_attempts)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

/// `signal`, an `S`, as JSON.
pub(crate) fn to_json<S: QueueSignal>(signal: &dyn Any) -> serde_json::Result<String> {
    let signal = signal
        .downcast_ref::<S>()
        .expect("a job's signal is of its handler's signal type");
    serde_json::to_string(signal)
}

/// Builds the context of a job of `S` from `scope`, and drops it.
#[cfg(feature = "sqlite")]
pub(crate) fn check_context<'c, S>(scope: JobScope<'c>) -> Result<(), BoxError>
where
    S: Signal,
    for<'x> S::Context<'x>: FromJob<'x>,
{
    <S::Context<'c> as FromJob<'c>>::from_job(scope).map(drop)
}

/// Runs one job of handler `H` of `S`: the payload back into `S`, the context from the worker's
/// transaction and state, then the handler.
#[cfg(feature = "sqlite")]
pub(crate) fn run<'c, S, H>(payload: &str, scope: JobScope<'c>) -> Result<(), AttemptError>
where
    S: Signal + DeserializeOwned,
    for<'x> S::Context<'x>: FromJob<'x>,
    H: Handler<S>,
{
    let signal: S = serde_json::from_str(payload).map_err(AttemptError::Payload)?;
    let mut ctx =
        <S::Context<'c> as FromJob<'c>>::from_job(scope).map_err(AttemptError::Context)?;
    H::call(&signal, &mut ctx).map_err(AttemptError::Handler)
}

/// Builds the context of a job of the asynchronous signal `S` from `scope`, and drops it.
#[cfg(feature = "async")]
pub(crate) fn check_context_async<'c, S>(scope: AsyncJobScope<'c>) -> Result<(), BoxError>
where
    S: Signal,
    for<'x> S::Context<'x>: FromJobAsync<'x>,
{
    <S::Context<'c> as FromJobAsync<'c>>::from_job(scope).map(drop)
}

/// Runs one job of the queued handler `J` of the asynchronous signal `S`.
#[cfg(feature = "async")]
pub(crate) async fn run_async<'c, S, J>(
    payload: &'c str,
    scope: AsyncJobScope<'c>,
) -> Result<(), AttemptError>
where
    S: Signal + DeserializeOwned + Send + Sync,
    for<'x> S::Context<'x>: FromJobAsync<'x> + Send,
    J: Handler<S>,
{
    let signal: S = serde_json::from_str(payload).map_err(AttemptError::Payload)?;
    let mut ctx =
        <S::Context<'c> as FromJobAsync<'c>>::from_job(scope).map_err(AttemptError::Context)?;
    J::call_async(&signal, &mut ctx)
        .await
        .map_err(AttemptError::Handler)
}

/// A row of the stats query, as the stores read it: (handler, state, count, oldest creation
/// time).
pub(crate) type StatRow = (String, String, i64, Option<i64>);

/// A waiting job as the test kit reads it: (id, handler, queue, payload, event id).
#[cfg(feature = "testing")]
pub(crate) type WaitingRow = (i64, String, String, String, String);

/// A dead job whose death was not announced, as the stores read it: (id, handler, queue,
/// attempt, last error, finished at).
pub(crate) type DeathRow = (i64, String, String, i32, Option<String>, i64);

/// A row of the dead-job listing, as the stores read it: (id, handler, attempt, last error,
/// payload).
pub(crate) type DeadJobRow = (i64, String, i32, Option<String>, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_column_text() {
        for state in [
            JobState::Pending,
            JobState::Running,
            JobState::Done,
            JobState::Dead,
        ] {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("lost"), None);
    }
}
