//! What a worker hands a job: its own transaction, the state the application gave it, and the
//! job's identity; and the trait that builds a signal's context from them.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

#[cfg(feature = "sqlite")]
use rusqlite::Transaction;
#[cfg(any(feature = "sqlite", feature = "async"))]
use signals_core::BoxError;
#[cfg(any(feature = "sqlite", feature = "async"))]
use uuid::Uuid;

#[cfg(feature = "async")]
use crate::db::Tx;

/// Builds a signal's context on the worker, from the worker's transaction and the state the
/// application gave the worker: the worker-side twin of the context the caller of `notify`
/// builds. Implement it once per context type.
///
/// # Examples
///
/// ```
/// use signals_queue::{FromJob, JobScope};
///
/// pub struct Mailer;
///
/// pub struct AppCtx<'a> {
///     pub tx: &'a rusqlite::Transaction<'a>,
///     pub mailer: &'a Mailer,
/// }
///
/// impl<'c> FromJob<'c> for AppCtx<'c> {
///     fn from_job(job: JobScope<'c>) -> Result<Self, signals_core::BoxError> {
///         Ok(AppCtx { tx: job.transaction(), mailer: job.state::<Mailer>()? })
///     }
/// }
/// ```
#[cfg(feature = "sqlite")]
#[diagnostic::on_unimplemented(
    message = "the worker can't build the context `{Self}` of a signal it runs (one with a queued handler, or a periodic one)",
    label = "needs `signals_queue::FromJob`",
    note = "implement `signals_queue::FromJob` for the context: `impl<'c> FromJob<'c> for AppCtx<'c> {{ fn from_job(job: JobScope<'c>) -> ... }}`"
)]
pub trait FromJob<'c>: Sized {
    /// The context for one job, from the worker's transaction (`job.transaction()`) and state
    /// (`job.state::<T>()`).
    ///
    /// # Errors
    ///
    /// Whatever keeps the context from being built (e.g. missing state); the attempt fails
    /// and is retried like a handler error.
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError>;
}

/// The context of a signal declared without one: a periodic signal whose handlers need
/// nothing but the signal.
#[cfg(feature = "sqlite")]
impl FromJob<'_> for () {
    fn from_job(_: JobScope<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// One job attempt as its handler's context sees it; see [`FromJob`].
#[cfg(feature = "sqlite")]
#[derive(Clone, Copy)]
pub struct JobScope<'c> {
    pub(crate) tx: &'c Transaction<'c>,
    pub(crate) state: &'c State,
    pub(crate) job_id: i64,
    pub(crate) event_id: Uuid,
    pub(crate) attempt: u32,
}

#[cfg(feature = "sqlite")]
impl<'c> JobScope<'c> {
    /// The worker's transaction for this attempt: the handler's writes and the job's
    /// completion commit together, or not at all.
    pub fn transaction(&self) -> &'c Transaction<'c> {
        self.tx
    }

    /// The value of type `T` the application gave the worker with
    /// [`WorkerBuilder::state`](crate::WorkerBuilder::state).
    ///
    /// # Errors
    ///
    /// [`MissingState`] if the worker was given no `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&'c T, MissingState> {
        self.state.get::<T>()
    }

    /// The job's id: with [`event_id`](Self::event_id), a key for making effects outside
    /// the database idempotent.
    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// The id of the `notify` that wrote the job (a UUIDv7 shared by every job it wrote).
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// Which attempt this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// The worker was given no state of the type a context asked for. The message names the type
/// asked for, the types the worker was given (a `Arc<Mailer>` given where `Mailer` is asked
/// for is a different type), and the builder call that gives it.
#[derive(Debug, thiserror::Error)]
#[error("the worker has no state of type `{wanted}` (it was given {given}): give it with `{giver}::state`")]
pub struct MissingState {
    wanted: &'static str,
    given: String,
    giver: &'static str,
}

/// The values the application hands the worker once, one per type.
#[derive(Clone)]
pub struct State {
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
    /// The builder whose `state` gives them, for the error that names it.
    giver: &'static str,
}

impl Default for State {
    fn default() -> Self {
        State::given_by("the builder")
    }
}

impl State {
    /// No values yet; `giver` is the builder whose `state` method adds them
    /// (`"AsyncWorkerBuilder"`), for the error a missing one makes.
    pub fn given_by(giver: &'static str) -> State {
        State {
            values: HashMap::new(),
            giver,
        }
    }

    /// Adds `value`, replacing a value of its type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let name = std::any::type_name::<T>();
        self.values
            .insert(TypeId::of::<T>(), (Arc::new(value), name));
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Result<&T, MissingState> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(value, _)| value.downcast_ref::<T>())
            .ok_or_else(|| self.missing::<T>())
    }

    fn missing<T>(&self) -> MissingState {
        let mut given: Vec<&str> = self.values.values().map(|(_, name)| *name).collect();
        given.sort_unstable();
        let given = match given.as_slice() {
            [] => "no state".to_owned(),
            names => names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        MissingState {
            wanted: std::any::type_name::<T>(),
            given,
            giver: self.giver,
        }
    }
}

#[cfg(feature = "async")]
/// Builds an asynchronous signal's context on the [`AsyncWorker`](crate::AsyncWorker), from the
/// worker's transaction and state. The async twin of [`FromJob`](crate::FromJob).
///
/// The context keeps the job's [`Tx`] as it is: on the worker it is lazy, and the transaction
/// begins at the handler's first use of it ([`with_db!`](crate::with_db), or
/// `ctx.tx.reborrow().postgres().await`), so a handler that calls the network first holds no
/// connection meanwhile.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "postgres")] {
/// use signals_queue::{AsyncJobScope, FromJobAsync, Tx};
///
/// pub struct Mailer;
///
/// pub struct AppCtx<'a> {
///     pub tx: Tx<'a>,
///     pub mailer: &'a Mailer,
/// }
///
/// impl<'c> FromJobAsync<'c> for AppCtx<'c> {
///     fn from_job(job: AsyncJobScope<'c>) -> Result<Self, signals_core::BoxError> {
///         let mailer = job.state::<Mailer>()?;
///         Ok(AppCtx { tx: job.transaction(), mailer })
///     }
/// }
/// # }
/// ```
///
/// A context that holds a bare connection cannot be built on the worker: the connection exists
/// only once the handler uses the transaction, and `postgres()` is `async` (it opens it). This is a
/// compile error (`?` cannot be applied to a future):
///
/// ```compile_fail
/// # #[cfg(feature = "postgres")] mod doc {
/// use signals_queue::{AsyncJobScope, FromJobAsync};
///
/// pub struct AppCtx<'a> {
///     pub tx: &'a mut sqlx::PgConnection,
/// }
///
/// impl<'c> FromJobAsync<'c> for AppCtx<'c> {
///     fn from_job(job: AsyncJobScope<'c>) -> Result<Self, signals_core::BoxError> {
///         Ok(AppCtx { tx: job.transaction().postgres()? })
///     }
/// }
/// # }
/// # #[cfg(not(feature = "postgres"))] compile_error!("needs the postgres feature");
/// ```
#[diagnostic::on_unimplemented(
    message = "the async worker can't build the context `{Self}` of a signal it runs (one with a queued handler, or a periodic one)",
    label = "needs `signals_queue::FromJobAsync`",
    note = "implement `signals_queue::FromJobAsync` for the context: `impl<'c> FromJobAsync<'c> for AppCtx<'c> {{ fn from_job(job: AsyncJobScope<'c>) -> ... }}`"
)]
pub trait FromJobAsync<'c>: Sized {
    /// The context for one job, from the worker's transaction (`job.transaction()`) and state
    /// (`job.state::<T>()`).
    ///
    /// # Errors
    ///
    /// Whatever keeps the context from being built; the attempt fails and is retried.
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError>;
}

/// The context of an asynchronous signal declared without one (see [`FromJob`]'s).
#[cfg(feature = "async")]
impl FromJobAsync<'_> for () {
    fn from_job(_: AsyncJobScope<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

#[cfg(feature = "async")]
/// One job attempt on the async worker, as its handler's context sees it; see
/// [`FromJobAsync`].
pub struct AsyncJobScope<'c> {
    pub(crate) tx: Tx<'c>,
    pub(crate) state: &'c State,
    pub(crate) job_id: i64,
    pub(crate) event_id: Uuid,
    pub(crate) attempt: u32,
}

#[cfg(feature = "async")]
impl<'c> AsyncJobScope<'c> {
    /// The worker's transaction for this attempt: the handler's writes and the job's
    /// completion commit together, or not at all. Take it last: it consumes the scope.
    pub fn transaction(self) -> Tx<'c> {
        self.tx
    }

    /// The value of type `T` the application gave the worker with
    /// [`AsyncWorkerBuilder::state`](crate::AsyncWorkerBuilder::state).
    ///
    /// # Errors
    ///
    /// [`MissingState`] if the worker was given no `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&'c T, MissingState> {
        self.state.get::<T>()
    }

    /// The job's id: with [`event_id`](Self::event_id), a key for idempotent side effects.
    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// The id of the `notify_async` that wrote the job.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// Which attempt this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_state_names_the_type_asked_for_the_types_given_and_the_builder() {
        let mut state = State::given_by("AsyncWorkerBuilder");
        state.insert(Arc::new(7_u8));
        let error = state.get::<u8>().expect_err("no `u8` was given");
        assert_eq!(
            error.to_string(),
            "the worker has no state of type `u8` (it was given `alloc::sync::Arc<u8>`): \
             give it with `AsyncWorkerBuilder::state`"
        );
        let empty = State::given_by("WorkerBuilder");
        let error = empty.get::<u8>().expect_err("nothing was given");
        assert!(error.to_string().contains("(it was given no state)"));
        assert!(error.to_string().contains("`WorkerBuilder::state`"));
    }
}
