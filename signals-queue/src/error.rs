//! The queue's one error type.

/// What can go wrong in the queue rung: the database, a missing piece of worker state, or a
/// configuration mistake found when the worker starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed (after the retries a locked database gets), through rusqlite.
    #[cfg(feature = "sqlite")]
    #[error("queue database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database failed, through sqlx.
    #[cfg(feature = "async")]
    #[error("queue database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// NATS or JetStream failed (the broker rung, `signals-broker`).
    #[cfg(feature = "async")]
    #[error("NATS error: {0}")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A database URL this crate can't open.
    #[error("unsupported database URL `{0}`: use `postgres://...` or `sqlite://...`")]
    UnsupportedUrl(String),
    /// The jobs table was written by a newer version of this crate.
    #[error("the jobs table has schema version {found}; this version of signals-queue knows up to {known}")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this crate knows.
        known: i64,
    },
    /// The jobs table is missing or older than this release needs. Workers, relays and
    /// subscribers never change the schema: a migration step does, before they start.
    #[error("the jobs table {}, and this release of signals-queue needs schema {needed}: run the migration first (`AsyncQueue::migrate`, `signals_queue::migrate`, or your program's migrate command), as a role allowed to change the schema", describe_schema(*.found))]
    SchemaOutdated {
        /// The newest migration the table has had, `None` if there is no table.
        found: Option<i64>,
        /// The migration this release needs.
        needed: i64,
    },
    /// The database connection goes through a pooler in transaction mode (PgBouncer, RDS
    /// Proxy): one session's statements land on different servers, which breaks sqlx's
    /// prepared statements, LISTEN and the migration's advisory lock.
    #[error("the queue's connections go through a pooler in transaction mode (PgBouncer, RDS Proxy): two statements of one connection reached two servers, which breaks prepared statements, LISTEN and session locks; connect the queue's pool to PostgreSQL directly or through a session-mode pool (see docs/production.md)")]
    TransactionPooler,
    /// Two queued handlers (or publishing functions) linked into this program share a job name.
    #[error("two queued handlers or publishing functions are both named `{name}` ({first} and {second}): give one a `name = \"...\"` of its own")]
    DuplicateJobName {
        /// The shared name.
        name: &'static str,
        /// Where the first is declared.
        first: String,
        /// Where the second is declared.
        second: String,
    },
    /// The worker could not open the connections of its own it needs beside the pool's.
    #[cfg(feature = "async")]
    #[error("the worker needs {needed} database connections of its own beside the pool's, and could not open them: {source}; raise the server's `max_connections` (or the role's `CONNECTION LIMIT`), or lower the pool's size")]
    WorkerConnections {
        /// How many it needs.
        needed: u32,
        /// Why the database refused.
        #[source]
        source: sqlx::Error,
    },
    /// No queued handler that this worker runs is linked into the program: it would idle.
    #[error("no queued handler {kind} is linked into this program, so the worker would never run a job: reference the crate that declares the handlers from this binary (a crate nothing references is not linked)")]
    NoHandlers {
        /// Which kind of handler the worker runs.
        kind: &'static str,
    },
    /// A periodic signal's cron pattern or time zone is wrong: found at `build()`.
    #[error("the periodic signal `{signal}` has a schedule the worker can't read: {message}")]
    Schedule {
        /// The signal's full path.
        signal: &'static str,
        /// What is wrong, in words.
        message: String,
    },
    /// The worker cannot build a queued handler's context (a missing `.state(...)`, say): found
    /// at `build()`, before the first job.
    #[error("the worker can't build the context of the queued handler `{job}`: {source}")]
    Context {
        /// The handler's job name.
        job: &'static str,
        /// What `from_job` returned.
        #[source]
        source: signals_core::BoxError,
    },
    /// A worker thread could not be started.
    #[error("could not start a worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A job's payload does not decode as the type asked for.
    #[error("the payload of job {id} does not decode: {source}")]
    Payload {
        /// The job's id.
        id: i64,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

fn describe_schema(found: Option<i64>) -> String {
    match found {
        Some(found) => format!("has schema {found}"),
        None => "does not exist".to_owned(),
    }
}

#[cfg(feature = "async")]
impl Error {
    /// A NATS or JetStream error.
    pub fn nats(error: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Nats(Box::new(error))
    }
}

/// A job attempt that did not complete: why, for the job's `last_error` and the retry decision.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// The payload no longer deserializes into the signal type: retrying cannot help.
    #[error("the payload does not deserialize into the signal: {0}")]
    Payload(#[source] serde_json::Error),
    /// The application could not build the handler's context (`FromJob`).
    #[error("could not build the handler's context: {0}")]
    Context(#[source] signals_core::BoxError),
    /// The handler returned an error.
    #[error("{0}")]
    Handler(#[source] signals_core::BoxError),
    /// The handler panicked.
    #[error("the handler panicked: {0}")]
    Panic(String),
    /// The handler ran past its timeout: its future was dropped (async) or its late commit
    /// will be refused (a thread).
    #[error("the handler timed out after {0:?}")]
    TimedOut(std::time::Duration),
    /// The worker shut down, and its grace ran out, before the handler finished.
    #[error("the worker shut down before the handler finished")]
    Shutdown,
    /// The job's deferred transaction read, another connection wrote (the worker's own
    /// heartbeat, say), then the handler tried to write: SQLite cannot upgrade that snapshot.
    /// Never retried in place: the attempt fails and the message says what to change.
    #[cfg(feature = "sqlite")]
    #[error("the handler read, then tried to write while or after another connection wrote (SQLITE_BUSY_SNAPSHOT or SQLITE_BUSY: SQLite has one writer, and a transaction that read cannot write past another's write): make the handler's slow work (the network call) come before its first statement, or its first statement a write; retried after a backoff")]
    BusySnapshot,
    /// The database failed while running or completing the job.
    #[cfg(feature = "sqlite")]
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database failed while running or completing the job (sqlx).
    #[cfg(feature = "async")]
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The job's signal is of the other kind than this worker runs.
    #[cfg(feature = "async")]
    #[error("this worker can't run the job: {0}")]
    WrongWorker(&'static str),
}

impl AttemptError {
    /// Whether the payload did not deserialize (retried for a grace period, then dead).
    pub(crate) fn is_payload(&self) -> bool {
        matches!(self, AttemptError::Payload(_))
    }

    /// A caught panic, with its message.
    pub(crate) fn panic(panic: &(dyn std::any::Any + Send)) -> AttemptError {
        let message = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
            (Some(message), _) => (*message).to_owned(),
            (_, Some(message)) => message.clone(),
            _ => "a panic without a message".to_owned(),
        };
        AttemptError::Panic(message)
    }

    /// Whether retrying cannot help, so the job is dead at once. (A payload that does not
    /// deserialize is retried for the worker's `payload_grace`: the next deploy may read it.)
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            #[cfg(feature = "async")]
            AttemptError::WrongWorker(_) => true,
            _ => false,
        }
    }
}

/// Locks `mutex`, whether or not a panic poisoned it: what the queue keeps under a mutex is
/// written in one step by each holder, so it stays consistent across a panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
