//! The worker: threads that claim jobs, run each handler in a transaction of its own that also
//! marks the job done, retry failures, renew leases and rescue the jobs of workers that died.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use uuid::Uuid;

use crate::clock::Clock;
use crate::enqueue::WAKE;
use crate::error::{AttemptError, Error};
use crate::job::{JobInfo, RetryPolicy};
use crate::scope::{JobScope, State};
use crate::sqlite::{self, Claimed};
use crate::{linked_jobs, trace};

/// Configures a [`Worker`]: where the jobs are, what handlers' contexts need, how many jobs
/// run at once, and the timings. Every setting has a default.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use signals_queue::Worker;
///
/// pub struct Mailer;
///
/// let worker = Worker::builder("shop.db")
///     .state(Mailer)
///     .concurrency(4)
///     .lease(Duration::from_secs(30))
///     .build()?;
/// let running = worker.start()?;
/// // ... the application runs ...
/// running.shutdown(Duration::from_secs(10))?;
/// # Ok::<(), signals_queue::Error>(())
/// ```
#[must_use = "call `build()` to get the worker"]
pub struct WorkerBuilder {
    path: PathBuf,
    state: State,
    concurrency: usize,
    lease: Duration,
    poll_interval: Duration,
    retry: RetryPolicy,
    batch: usize,
    clock: Clock,
    busy_timeout: Duration,
}

impl WorkerBuilder {
    /// Hands the worker a value that handlers' contexts reach with
    /// [`JobScope::state`](crate::JobScope::state): a mailer, an HTTP client, configuration.
    /// One value per type; a second of the same type replaces the first.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// How many jobs run at once, each on a thread and connection of its own (default 1).
    /// On SQLite, writes still take turns: there is one writer at a time.
    pub fn concurrency(mut self, threads: usize) -> Self {
        self.concurrency = threads.max(1);
        self
    }

    /// How long a claim holds a job before another worker may take it back (default 30 s).
    /// Heartbeats renew it every third of it while the handler runs, so it bounds how long a
    /// dead worker's jobs wait, not how long a handler may run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often an idle worker looks for jobs written by other processes (default 500 ms).
    /// Jobs written in this process wake it at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The backoff between failed attempts (default: 1 s doubling, capped at 1 hour).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many jobs one claim takes (default 8); each still runs and commits on its own.
    pub fn batch(mut self, jobs: usize) -> Self {
        self.batch = jobs.max(1);
        self
    }

    /// How long a statement waits for another connection's write lock (default 10 s). A
    /// statement still refused then is retried with backoff; the worker does not stop.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The clock for leases, retries and heartbeats (tests use [`Clock::manual`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Creates the jobs table if needed and gathers the queued handlers linked into this
    /// program: the worker claims only their jobs.
    ///
    /// # Errors
    ///
    /// A database error, a schema newer than this crate, or two queued handlers with one name.
    pub fn build(self) -> Result<Worker, Error> {
        let conn = sqlite::open(&self.path, self.busy_timeout)?;
        sqlite::migrate(&conn)?;
        let (by_name, handlers) = linked_jobs(JobInfo::runs_on_worker)?;
        Ok(Worker {
            shared: Arc::new(Shared {
                config: self,
                jobs: by_name,
                handlers,
                stop: AtomicBool::new(false),
                running: Mutex::new(Vec::new()),
                stopped: Condvar::new(),
            }),
        })
    }
}

/// Runs the jobs of the queued handlers linked into this program, from a SQLite database file.
///
/// Each job runs in a transaction of the worker's own: the handler's context is built from it
/// ([`FromJob`](crate::FromJob)), the handler runs, and the job is marked done in that same
/// transaction, so a handler whose effects are database writes takes effect exactly once.
/// Effects outside the database (an email) happen at least once: a worker that dies after
/// sending and before committing sends again on the retry; use
/// [`JobScope::job_id`](crate::JobScope::job_id) or `event_id` as an idempotency key.
pub struct Worker {
    shared: Arc<Shared>,
}

/// What the worker's threads share.
struct Shared {
    /// The settings the worker was built with.
    config: WorkerBuilder,
    jobs: HashMap<&'static str, &'static JobInfo>,
    /// The linked handlers' names as a JSON array, for the claim statement.
    handlers: String,
    stop: AtomicBool,
    /// The (id, token) of every job this worker has claimed and not finished, for heartbeats.
    running: Mutex<Vec<(i64, i64)>>,
    /// Wakes the lease thread at shutdown (it does not wake for new jobs).
    stopped: Condvar,
}

impl Worker {
    /// A worker over the SQLite database at `path`; see [`WorkerBuilder`].
    pub fn builder(path: impl Into<PathBuf>) -> WorkerBuilder {
        WorkerBuilder {
            path: path.into(),
            state: State::default(),
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            batch: 8,
            clock: Clock::system(),
            busy_timeout: sqlite::BUSY_TIMEOUT,
        }
    }

    /// The names of the queued handlers whose jobs this worker runs.
    pub fn handlers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shared.jobs.keys().copied()
    }

    /// Starts the worker's threads: `concurrency` that run jobs, and one that renews leases
    /// and rescues the jobs of workers that died.
    ///
    /// # Errors
    ///
    /// [`Error::Thread`] if a thread cannot be spawned.
    pub fn start(self) -> Result<RunningWorker, Error> {
        let mut threads = Vec::with_capacity(self.shared.config.concurrency + 1);
        for i in 0..self.shared.config.concurrency {
            let shared = Arc::clone(&self.shared);
            threads.push(spawn(format!("signals-queue-{i}"), move || {
                run_jobs(&shared)
            })?);
        }
        let shared = Arc::clone(&self.shared);
        threads.push(spawn("signals-queue-leases".into(), move || {
            keep_leases(&shared);
        })?);
        Ok(RunningWorker {
            shared: self.shared,
            threads,
        })
    }

    /// Runs jobs until none of this worker's handlers has a job pending (waiting retries
    /// included) or running, then stops.
    ///
    /// # Errors
    ///
    /// A database error while checking for work, or a thread that could not start.
    pub fn run_until_idle(self) -> Result<(), Error> {
        let running = self.start()?;
        running.wait_idle()?;
        running.shutdown(Duration::from_secs(60))
    }
}

fn spawn(name: String, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name)
        .spawn(run)
        .map_err(Error::Thread)
}

/// A started [`Worker`]; [`shutdown`](Self::shutdown) stops it. Dropping it stops it too,
/// letting running handlers finish.
pub struct RunningWorker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningWorker {
    /// Waits until none of this worker's handlers has a job pending (waiting retries included)
    /// or running, in any process.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn wait_idle(&self) -> Result<(), Error> {
        let conn = sqlite::open(&self.shared.config.path, self.shared.config.busy_timeout)?;
        loop {
            let busy: i64 =
                match conn.query_row(sqlite::BUSY, [&self.shared.handlers], |row| row.get(0)) {
                    Ok(busy) => busy,
                    Err(error) if sqlite::is_busy(&error) => 1,
                    Err(error) => return Err(error.into()),
                };
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops claiming, lets the running handlers finish, and gives back the jobs claimed but
    /// not started. Returns once every thread has stopped, or after `grace`: a handler still
    /// running then is left to finish on its own (its lease lapses if it never does, and
    /// another worker takes the job back).
    ///
    /// # Errors
    ///
    /// None today; reserved for reporting handlers that outlived `grace`.
    pub fn shutdown(mut self, grace: Duration) -> Result<(), Error> {
        self.stop(grace);
        Ok(())
    }

    fn stop(&mut self, grace: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _running = lock(&self.shared.running);
            self.shared.stopped.notify_all();
        }
        WAKE.notify();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for thread in self.threads.drain(..) {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(Duration::from_secs(60));
        }
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `duration`, or until shutdown.
    fn sleep(&self, duration: Duration) {
        let running = lock(&self.running);
        let _ = self
            .stopped
            .wait_timeout_while(running, duration, |_| !self.stopping());
    }

    /// A connection, retried with backoff while the database cannot be opened.
    fn connect(&self) -> Option<Connection> {
        let mut backoff = Duration::from_millis(10);
        while !self.stopping() {
            match sqlite::open(&self.config.path, self.config.busy_timeout) {
                Ok(conn) => return Some(conn),
                Err(error) => {
                    trace::database_error("open", &error);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        None
    }
}

/// A job thread: claim, run, repeat; wait for a wake-up or the poll interval when idle.
fn run_jobs(shared: &Shared) {
    let Some(mut conn) = shared.connect() else {
        return;
    };
    let mut seen = WAKE.generation();
    // After a wake-up the new job is not visible until its writer commits: look again soon.
    let mut soon: Option<Duration> = None;
    let mut backoff = Duration::from_millis(10);
    while !shared.stopping() {
        let now = shared.config.clock.now();
        // Woken for a job another connection is still committing: look (a read, which does not
        // wait for that writer) before claiming (a write, which would queue behind it).
        if soon.is_some() && !sqlite::runnable(&conn, &shared.handlers, now).unwrap_or(true) {
            let generation = WAKE.wait(seen, soon.unwrap_or(shared.config.poll_interval));
            soon = soon
                .map(|d| d * 2)
                .filter(|d| *d < shared.config.poll_interval);
            if generation != seen {
                (seen, soon) = (generation, Some(Duration::from_micros(200)));
            }
            continue;
        }
        match sqlite::claim(
            &conn,
            &shared.handlers,
            shared.config.batch,
            now,
            shared.config.lease,
        ) {
            Ok(claimed) if claimed.is_empty() => {
                let generation = WAKE.wait(seen, soon.unwrap_or(shared.config.poll_interval));
                soon = if generation != seen {
                    Some(Duration::from_micros(200))
                } else {
                    soon.map(|d| d * 2)
                        .filter(|d| *d < shared.config.poll_interval)
                };
                seen = generation;
            }
            Ok(claimed) => {
                soon = None;
                backoff = Duration::from_millis(10);
                run_claimed(shared, &mut conn, claimed);
            }
            Err(error) => {
                trace::database_error("claim", &error.into());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs claimed jobs in order; at shutdown, gives back those not started. Every claimed job's
/// lease is renewed from the claim on, not only while it runs: the last of a batch may wait.
fn run_claimed(shared: &Shared, conn: &mut Connection, claimed: Vec<Claimed>) {
    lock(&shared.running).extend(claimed.iter().map(|job| (job.id, job.token)));
    for job in claimed {
        if shared.stopping() {
            let _ = with_retries(|| sqlite::release(conn, job.id, job.token));
        } else {
            run_one(shared, conn, &job);
        }
        lock(&shared.running).retain(|&(id, _)| id != job.id);
    }
}

/// Runs one job and records its outcome.
fn run_one(shared: &Shared, conn: &mut Connection, job: &Claimed) {
    let Some(&info) = shared.jobs.get(job.handler.as_str()) else {
        return; // the claim names only linked handlers
    };
    let span = trace::attempt(job, info);
    let outcome = {
        let _entered = span.enter();
        attempt(shared, conn, info, job)
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => trace::lease_lost(job),
        Err(error) => record_failure(shared, conn, info, job, &error),
    }
}

/// Runs the handler and completes the job in one transaction. `Ok(false)`: the lease was lost,
/// and the transaction rolled back. A busy database (another writer's snapshot) rolls back and
/// runs the attempt again: its database effects were undone.
fn attempt(
    shared: &Shared,
    conn: &mut Connection,
    info: &JobInfo,
    job: &Claimed,
) -> Result<bool, AttemptError> {
    let event_id = Uuid::parse_str(&job.event_id).unwrap_or_default();
    let mut tries = 0;
    loop {
        tries += 1;
        let retry = tries < 5;
        // Deferred: the write lock is taken at the handler's first write (or the completion),
        // not while it waits on the network before writing.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let scope = JobScope {
            tx: &tx,
            state: &shared.config.state,
            job_id: job.id,
            event_id,
            attempt: job.attempt,
        };
        match catch_unwind(AssertUnwindSafe(|| info.run(&job.payload, scope))) {
            Err(panic) => return Err(AttemptError::panic(&*panic)),
            Ok(Err(error)) if retry && busy_attempt(&error) => continue,
            Ok(Err(error)) => return Err(error),
            Ok(Ok(())) => {}
        }
        match sqlite::complete(&tx, job, shared.config.clock.now()) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(error) if retry && sqlite::is_busy(&error) => continue,
            Err(error) => return Err(error.into()),
        }
        match tx.commit() {
            Ok(()) => return Ok(true),
            Err(error) if retry && sqlite::is_busy(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether a failed attempt failed only because the database was busy.
fn busy_attempt(error: &AttemptError) -> bool {
    match error {
        AttemptError::Database(error) => sqlite::is_busy(error),
        AttemptError::Handler(error) | AttemptError::Context(error) => error
            .downcast_ref::<rusqlite::Error>()
            .is_some_and(sqlite::is_busy),
        _ => false,
    }
}

/// Records a failed attempt: pending again after a backoff, or dead.
fn record_failure(
    shared: &Shared,
    conn: &Connection,
    info: &JobInfo,
    job: &Claimed,
    error: &AttemptError,
) {
    let now = shared.config.clock.now();
    let delay = shared.config.retry.delay(job.attempt, fastrand::f64());
    let retry_at = now + delay.as_millis() as i64;
    let permanent = error.is_permanent();
    let message = error.to_string();
    let recorded = with_retries(|| sqlite::fail(conn, job, permanent, now, retry_at, &message))
        .unwrap_or(false);
    let dead = permanent || job.attempt >= info.max_attempts();
    trace::failed(job, info, error, recorded, dead);
}

/// The lease thread: renews the leases of this worker's running jobs and returns expired
/// leases (of any worker) to the queue, every third of a lease.
fn keep_leases(shared: &Shared) {
    let Some(conn) = shared.connect() else {
        return;
    };
    let every =
        (shared.config.lease / 3).min(shared.config.poll_interval.max(Duration::from_millis(10)));
    while !shared.stopping() {
        let mut tokens: Vec<i64> = lock(&shared.running)
            .iter()
            .map(|&(_, token)| token)
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        let now = shared.config.clock.now();
        if !tokens.is_empty() {
            let lease_until = now + shared.config.lease.as_millis() as i64;
            if let Err(error) = with_retries(|| sqlite::heartbeat(&conn, &tokens, lease_until)) {
                trace::database_error("heartbeat", &error.into());
            }
        }
        match with_retries(|| sqlite::rescue(&conn, now)) {
            Ok(0) => {}
            Ok(rescued) => {
                trace::rescued(rescued);
                WAKE.notify();
            }
            Err(error) => trace::database_error("rescue", &error.into()),
        }
        shared.sleep(every);
    }
}

/// Runs `statement` again while the database is busy, a few times with a short backoff.
fn with_retries<T>(mut statement: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut backoff = Duration::from_millis(5);
    for _ in 0..8 {
        match statement() {
            Err(error) if sqlite::is_busy(&error) => {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            result => return result,
        }
    }
    statement()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
