//! The async worker: tokio tasks that claim jobs, run each handler in a transaction of its own
//! that also marks the job done, retry failures, renew leases and rescue the jobs of workers
//! that died. The same design as the thread-based [`Worker`](crate::Worker), over sqlx.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::asynchronous::{AsyncJobScope, Pool};
use crate::clock::Clock;
use crate::error::{AttemptError, Error};
use crate::job::{JobInfo, RetryPolicy};
use crate::scope::State;
use crate::sqlite_sql::Claimed;
use crate::{linked_jobs, store, trace};

/// Wakes this process's async workers when a job may have been written (before its commit:
/// a worker that finds nothing looks again shortly).
pub static WAKE: Notify = Notify::const_new();

/// Configures an [`AsyncWorker`]; every setting has a default.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> Result<(), signals_queue::Error> {
/// use std::time::Duration;
/// use signals_queue::{AsyncWorker, Pool};
///
/// pub struct Mailer;
///
/// let pool = Pool::connect("postgres://127.0.0.1/shop", 8).await?;
/// let running = AsyncWorker::builder(pool)
///     .state(Mailer)
///     .concurrency(4)
///     .build()
///     .await?
///     .start();
/// // ... the application runs ...
/// running.shutdown(Duration::from_secs(10)).await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "call `build().await` to get the worker"]
pub struct AsyncWorkerBuilder {
    pool: Pool,
    state: State,
    concurrency: usize,
    lease: Duration,
    poll_interval: Duration,
    retry: RetryPolicy,
    batch: usize,
    clock: Clock,
    listen: bool,
    /// `None`: 16 on PostgreSQL, 1 on SQLite.
    jobs_per_commit: Option<usize>,
}

impl AsyncWorkerBuilder {
    /// Hands the worker a value that contexts reach with
    /// [`AsyncJobScope::state`](crate::AsyncJobScope::state); one per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// How many jobs run at once, each in a task and transaction of its own (default 1).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
        self
    }

    /// How long a claim holds a job before another worker may take it back (default 30 s);
    /// renewed every third of it while the job waits or runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often an idle worker looks for jobs when nothing woke it (default 500 ms). On
    /// PostgreSQL a committed job wakes it through LISTEN/NOTIFY; polling is the fallback
    /// that makes a lost notification a delay, never a lost job.
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

    /// How many jobs may share one commit (default: 16 on PostgreSQL, 1 on SQLite). Each job
    /// of a group runs after a savepoint: its effects and its completion still commit together
    /// or not at all, and a failing job rolls back alone; the group saves a commit (a disk
    /// flush) per job. A group commits after its last claimed job or once it has been open
    /// 100 ms, so a slow job delays the commit of the group's earlier jobs by at most that much
    /// plus its own run. If the commit fails, every job of the group counts a failed attempt.
    ///
    /// On SQLite a group holds the database's one write lock from its start to its commit
    /// (`BEGIN IMMEDIATE`): the application's writers wait for the whole group. Set it there
    /// only for handlers that do not wait on the network.
    pub fn jobs_per_commit(mut self, jobs: usize) -> Self {
        self.jobs_per_commit = Some(jobs.max(1));
        self
    }

    /// Whether to LISTEN for the jobs table's notifications on PostgreSQL (default `true`);
    /// without it the worker polls.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// The clock for leases, retries and heartbeats (tests use [`Clock::manual`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Creates the jobs table if needed and gathers the queued handlers of asynchronous
    /// signals linked into this program: the worker claims only their jobs.
    ///
    /// # Errors
    ///
    /// A database error, a schema newer than this crate, or two queued handlers with one name.
    pub async fn build(self) -> Result<AsyncWorker, Error> {
        store::migrate(&self.pool).await?;
        let (jobs, handlers) = linked_jobs(JobInfo::runs_on_async_worker)?;
        Ok(AsyncWorker {
            shared: Arc::new(Shared {
                config: self,
                jobs,
                handlers,
                stop: AtomicBool::new(false),
                stopped: Notify::new(),
                woken: Notify::new(),
                running: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// Runs the jobs of the queued handlers of asynchronous signals linked into this program, on
/// tokio, from PostgreSQL or SQLite through sqlx.
///
/// Each job runs in a transaction of the worker's own: the handler's context is built from it
/// ([`FromJobAsync`](crate::FromJobAsync)), the handler runs, and the job is marked done in
/// that same transaction. Several workers, in one process or many, share one table: a claim is
/// `FOR UPDATE SKIP LOCKED` on PostgreSQL, one `UPDATE` statement on SQLite.
pub struct AsyncWorker {
    shared: Arc<Shared>,
}

struct Shared {
    config: AsyncWorkerBuilder,
    jobs: HashMap<&'static str, &'static JobInfo>,
    handlers: String,
    stop: AtomicBool,
    stopped: Notify,
    /// Wakes the job tasks: a notification from PostgreSQL, or rescued jobs.
    woken: Notify,
    /// The (id, token) of every job claimed and not finished, for heartbeats.
    running: Mutex<Vec<(i64, i64)>>,
}

impl AsyncWorker {
    /// A worker over `pool`; see [`AsyncWorkerBuilder`].
    pub fn builder(pool: impl Into<Pool>) -> AsyncWorkerBuilder {
        AsyncWorkerBuilder {
            pool: pool.into(),
            state: State::default(),
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            batch: 8,
            clock: Clock::system(),
            listen: true,
            jobs_per_commit: None,
        }
    }

    /// The names of the queued handlers whose jobs this worker runs.
    pub fn handlers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shared.jobs.keys().copied()
    }

    /// Spawns the worker's tasks on the current tokio runtime: `concurrency` that run jobs,
    /// one that renews leases and rescues the jobs of workers that died, and on PostgreSQL one
    /// that listens for new jobs.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(self) -> RunningAsyncWorker {
        let mut tasks = Vec::with_capacity(self.shared.config.concurrency + 2);
        for _ in 0..self.shared.config.concurrency {
            tasks.push(tokio::spawn(run_jobs(Arc::clone(&self.shared))));
        }
        tasks.push(tokio::spawn(keep_leases(Arc::clone(&self.shared))));
        if self.shared.config.listen && self.shared.config.pool.is_postgres() {
            let shared = Arc::clone(&self.shared);
            tasks.push(tokio::spawn(async move {
                let Shared {
                    config,
                    woken,
                    stop,
                    stopped,
                    ..
                } = &*shared;
                listen(&config.pool, woken, stop, stopped).await;
            }));
        }
        RunningAsyncWorker {
            shared: self.shared,
            tasks,
        }
    }

    /// Runs jobs until none of this worker's handlers has a job pending (waiting retries
    /// included) or running, then stops.
    ///
    /// # Errors
    ///
    /// A database error while checking for work.
    pub async fn run_until_idle(self) -> Result<(), Error> {
        let running = self.start();
        let idle = running.wait_idle().await;
        running.shutdown(Duration::from_secs(60)).await?;
        idle
    }
}

/// A started [`AsyncWorker`]; [`shutdown`](Self::shutdown) stops it. Dropping it aborts its
/// tasks (a job cut off that way rolls back, and its lease brings it back).
pub struct RunningAsyncWorker {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningAsyncWorker {
    /// Waits until none of this worker's handlers has a job pending (waiting retries included)
    /// or running, in any process.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn wait_idle(&self) -> Result<(), Error> {
        loop {
            let busy = match self.shared.config.pool.acquire().await {
                Ok(mut conn) => store::busy(conn.tx(), &self.shared.handlers).await,
                Err(error) => Err(error),
            };
            match busy {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) if store::is_busy(&error) => {}
                Err(error) => return Err(error.into()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops claiming, lets the running handlers finish, and gives back the jobs claimed but
    /// not started. Returns once every task has stopped, or after `grace`: tasks still running
    /// then are aborted (their transactions roll back; their leases bring the jobs back).
    ///
    /// # Errors
    ///
    /// None today; reserved for reporting handlers that outlived `grace`.
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), Error> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.stopped.notify_waiters();
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(grace, futures_util::future::join_all(tasks))
            .await
            .is_err()
        {
            aborts.iter().for_each(|task| task.abort());
        }
        Ok(())
    }
}

impl Drop for RunningAsyncWorker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.stopped.notify_waiters();
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Shared {
    fn jobs_per_commit(&self) -> usize {
        let default = if self.config.pool.is_postgres() {
            16
        } else {
            1
        };
        self.config.jobs_per_commit.unwrap_or(default)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `duration`, or until shutdown.
    async fn sleep(&self, duration: Duration) {
        let stopped = self.stopped.notified();
        if self.stopping() {
            return;
        }
        tokio::select! {
            () = stopped => {}
            () = tokio::time::sleep(duration) => {}
        }
    }

    async fn claim(&self) -> Result<Vec<Claimed>, sqlx::Error> {
        let mut conn = self.config.pool.acquire().await?;
        let now = self.config.clock.now();
        store::claim(
            conn.tx(),
            &self.handlers,
            self.config.batch,
            now,
            self.config.lease,
        )
        .await
    }
}

/// A job task: claim, run, repeat; wait for a wake-up or the poll interval when idle.
async fn run_jobs(shared: Arc<Shared>) {
    let mut soon: Option<Duration> = None;
    let mut backoff = Duration::from_millis(10);
    while !shared.stopping() {
        let local = WAKE.notified();
        tokio::pin!(local);
        local.as_mut().enable();
        let woken = shared.woken.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let stopped = shared.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if shared.stopping() {
            break;
        }
        match shared.claim().await {
            Ok(claimed) if claimed.is_empty() => {
                let wait = soon.unwrap_or(shared.config.poll_interval);
                tokio::select! {
                    // Written in this process, maybe not committed yet: look again soon.
                    () = &mut local => soon = Some(Duration::from_micros(200)),
                    // Committed (PostgreSQL notifies at commit), or rescued.
                    () = &mut woken => soon = None,
                    () = tokio::time::sleep(wait) => {
                        soon = soon.map(|d| d * 2).filter(|d| *d < shared.config.poll_interval);
                    }
                    () = &mut stopped => {}
                }
            }
            Ok(claimed) => {
                soon = None;
                backoff = Duration::from_millis(10);
                run_claimed(&shared, claimed).await;
            }
            Err(error) => {
                trace::database_error("claim", &error.into());
                shared.sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs claimed jobs in order; at shutdown, gives back those not started.
async fn run_claimed(shared: &Shared, claimed: Vec<Claimed>) {
    lock(&shared.running).extend(claimed.iter().map(|job| (job.id, job.token)));
    // A single job gains nothing from a group, and would wait for two more round trips.
    if claimed.len() > 1 && shared.jobs_per_commit() > 1 {
        run_grouped(shared, claimed).await;
        return;
    }
    for job in claimed {
        if shared.stopping() {
            release(shared, &job).await;
        } else {
            run_one(shared, &job).await;
        }
        lock(&shared.running).retain(|&(id, _)| id != job.id);
    }
}

/// Gives a claimed job back without counting the attempt, and forgets it.
async fn release(shared: &Shared, job: &Claimed) {
    let _ = with_retries(shared, |mut conn| async move {
        store::release(conn.tx(), job.id, job.token).await
    })
    .await;
    lock(&shared.running).retain(|&(id, _)| id != job.id);
}

/// How long a group's transaction stays open before it commits, however many of its jobs are
/// still to run: bounds how long a finished job's effects wait for their commit.
const GROUP_WINDOW: Duration = Duration::from_millis(100);

/// Runs one claim's jobs several to a transaction. The group's transaction first locks the job
/// rows its claim still holds (a job whose lease was lost is skipped: that lock is the fence,
/// and no other worker can take a locked row back; on SQLite the transaction holds the write
/// lock from its start). Each job then runs after a
/// `SAVEPOINT`: a failing job rolls back to it alone, and its failure is recorded in the
/// group's transaction. One statement completes every job that succeeded, and one commit makes
/// each job's effects and completion durable together. A group ends after `jobs_per_commit`
/// jobs, or once it has been open [`GROUP_WINDOW`]; if its transaction fails, every job it ran
/// counts a failed attempt.
async fn run_grouped(shared: &Shared, claimed: Vec<Claimed>) {
    let mut jobs = claimed;
    jobs.reverse(); // popped from the end, in claim order
    while !jobs.is_empty() {
        let size = shared.jobs_per_commit().min(jobs.len());
        let group: Vec<Claimed> = jobs
            .split_off(jobs.len() - size)
            .into_iter()
            .rev()
            .collect();
        let leftover = match run_group(shared, group).await {
            Ok(leftover) => leftover,
            Err(leftover) if shared.stopping() => {
                // Still claimed: their leases bring them back to the queue.
                let ids: Vec<i64> = leftover.iter().map(|job| job.id).collect();
                lock(&shared.running).retain(|(id, _)| !ids.contains(id));
                return;
            }
            Err(leftover) => {
                shared.sleep(Duration::from_millis(50)).await;
                leftover
            }
        };
        jobs.extend(leftover.into_iter().rev());
    }
}

/// One group: see [`run_grouped`]. Returns the jobs it did not reach (still claimed), in `Err`
/// if the database failed.
async fn run_group(shared: &Shared, group: Vec<Claimed>) -> Result<Vec<Claimed>, Vec<Claimed>> {
    let forget = |ids: &[i64]| lock(&shared.running).retain(|(id, _)| !ids.contains(id));
    let token = group[0].token;
    let ids: Vec<i64> = group.iter().map(|job| job.id).collect();
    let begun = async {
        // IMMEDIATE on SQLite: the write lock from the start, so the check below is a fence.
        let mut tx = shared.config.pool.begin().await?;
        let held = store::lock_claimed(tx.tx(), &ids, token).await?;
        Ok::<_, sqlx::Error>((tx, held))
    };
    let (mut tx, held) = match begun.await {
        Ok(begun) => begun,
        Err(error) => {
            trace::database_error("begin", &error.into());
            return Err(group);
        }
    };
    let opened = std::time::Instant::now();
    let mut ran: Vec<(&Claimed, &'static JobInfo)> = Vec::new();
    let mut done: Vec<i64> = Vec::new();
    let mut leftover: Vec<Claimed> = Vec::new();
    let mut broken: Option<sqlx::Error> = None;
    for job in &group {
        if !held.contains(&job.id) {
            trace::lease_lost(job);
            forget(&[job.id]);
            continue;
        }
        let Some(&info) = shared.jobs.get(job.handler.as_str()) else {
            continue;
        };
        if broken.is_some() || opened.elapsed() >= GROUP_WINDOW || shared.stopping() {
            leftover.push(job.clone());
            continue;
        }
        ran.push((job, info));
        let span = trace::attempt(job, info);
        match trace::instrument(attempt_in_group(shared, &mut tx, info, job), span).await {
            Ok(true) => done.push(job.id),
            Ok(false) => {}
            Err(error) => broken = Some(error),
        }
    }
    let finish = async {
        if let Some(error) = broken {
            return Err(error);
        }
        if shared.stopping() {
            // Locked by this transaction: given back in it.
            for job in leftover.drain(..) {
                store::release(tx.tx(), job.id, job.token).await?;
            }
        }
        store::complete_many(tx.tx(), &done, token, shared.config.clock.now()).await?;
        tx.commit().await
    };
    let ran_ids: Vec<i64> = ran.iter().map(|(job, _)| job.id).collect();
    match finish.await {
        Ok(()) => {
            forget(&ran_ids);
            if shared.stopping() {
                forget(&ids);
            }
            Ok(leftover)
        }
        Err(error) => {
            // Nothing of the group committed: each job it ran failed an attempt on the database.
            let error = AttemptError::Sqlx(error);
            for (job, info) in ran {
                record_failure(shared, info, job, &error).await;
            }
            forget(&ran_ids);
            Err(leftover)
        }
    }
}

/// One job of a group, after a savepoint of the group's transaction: `Ok(true)` if it
/// succeeded (its completion comes with the group's), `Ok(false)` if it failed (rolled back to
/// its savepoint, its failure recorded). `Err`: the transaction itself failed.
async fn attempt_in_group(
    shared: &Shared,
    tx: &mut crate::asynchronous::Transaction,
    info: &JobInfo,
    job: &Claimed,
) -> Result<bool, sqlx::Error> {
    store::savepoint(tx.tx(), "SAVEPOINT signals_job").await?;
    let scope = AsyncJobScope {
        tx: tx.tx(),
        state: &shared.config.state,
        job_id: job.id,
        event_id: Uuid::parse_str(&job.event_id).unwrap_or_default(),
        attempt: job.attempt,
    };
    let error = match AssertUnwindSafe(info.run_async(&job.payload, scope))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => return Ok(true),
        Ok(Err(error)) => error,
        Err(panic) => AttemptError::panic(&*panic),
    };
    store::savepoint(tx.tx(), "ROLLBACK TO SAVEPOINT signals_job").await?;
    let now = shared.config.clock.now();
    let retry_at = now
        + shared
            .config
            .retry
            .delay(job.attempt, fastrand::f64())
            .as_millis() as i64;
    let message = error.to_string();
    let recorded = store::fail(tx.tx(), job, error.is_permanent(), now, retry_at, &message).await?;
    let dead = error.is_permanent() || job.attempt >= info.max_attempts();
    trace::failed(job, info, &error, recorded, dead);
    Ok(false)
}

async fn run_one(shared: &Shared, job: &Claimed) {
    let Some(&info) = shared.jobs.get(job.handler.as_str()) else {
        return;
    };
    let span = trace::attempt(job, info);
    let outcome = trace::instrument(attempt(shared, info, job), span).await;
    match outcome {
        Ok(true) => {}
        Ok(false) => trace::lease_lost(job),
        Err(error) => record_failure(shared, info, job, &error).await,
    }
}

/// Runs the handler and completes the job in one transaction. `Ok(false)`: the lease was lost
/// and the transaction rolled back. A busy SQLite database rolls back and runs the attempt
/// again: its database effects were undone.
async fn attempt(shared: &Shared, info: &JobInfo, job: &Claimed) -> Result<bool, AttemptError> {
    let event_id = Uuid::parse_str(&job.event_id).unwrap_or_default();
    let mut tries = 0;
    loop {
        tries += 1;
        let retry = tries < 5;
        let mut tx = shared.config.pool.begin_job().await?;
        let scope = AsyncJobScope {
            tx: tx.tx(),
            state: &shared.config.state,
            job_id: job.id,
            event_id,
            attempt: job.attempt,
        };
        match AssertUnwindSafe(info.run_async(&job.payload, scope))
            .catch_unwind()
            .await
        {
            Err(panic) => return Err(AttemptError::panic(&*panic)),
            Ok(Err(error)) if retry && busy_attempt(&error) => continue,
            Ok(Err(error)) => return Err(error),
            Ok(Ok(())) => {}
        }
        match store::complete(tx.tx(), job, shared.config.clock.now()).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(error) if retry && store::is_busy(&error) => continue,
            Err(error) => return Err(error.into()),
        }
        match tx.commit().await {
            Ok(()) => return Ok(true),
            Err(error) if retry && store::is_busy(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

fn busy_attempt(error: &AttemptError) -> bool {
    match error {
        AttemptError::Sqlx(error) => store::is_busy(error),
        AttemptError::Handler(error) | AttemptError::Context(error) => error
            .downcast_ref::<sqlx::Error>()
            .is_some_and(store::is_busy),
        _ => false,
    }
}

async fn record_failure(shared: &Shared, info: &JobInfo, job: &Claimed, error: &AttemptError) {
    let now = shared.config.clock.now();
    let delay = shared.config.retry.delay(job.attempt, fastrand::f64());
    let retry_at = now + delay.as_millis() as i64;
    let permanent = error.is_permanent();
    let message = error.to_string();
    let recorded = with_retries(shared, |mut conn| {
        let message = &message;
        async move { store::fail(conn.tx(), job, permanent, now, retry_at, message).await }
    })
    .await
    .unwrap_or(false);
    let dead = permanent || job.attempt >= info.max_attempts();
    trace::failed(job, info, error, recorded, dead);
}

/// Renews the leases of this worker's jobs and returns expired leases (of any worker) to the
/// queue, every third of a lease.
async fn keep_leases(shared: Arc<Shared>) {
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
            let tokens = &tokens;
            if let Err(error) = with_retries(&shared, |mut conn| async move {
                store::heartbeat(conn.tx(), tokens, lease_until).await
            })
            .await
            {
                trace::database_error("heartbeat", &error.into());
            }
        }
        match with_retries(&shared, |mut conn| async move {
            store::rescue(conn.tx(), now).await
        })
        .await
        {
            Ok(0) => {}
            Ok(rescued) => {
                trace::rescued(rescued as usize);
                shared.woken.notify_waiters();
            }
            Err(error) => trace::database_error("rescue", &error.into()),
        }
        shared.sleep(every).await;
    }
}

/// Listens for the jobs table's notifications on PostgreSQL and wakes `woken`'s waiters;
/// reconnects with backoff when the connection is lost, until `stop` is set (and `stopped`
/// notified). Returns at once on SQLite.
#[cfg(feature = "postgres")]
pub async fn listen(pool: &Pool, woken: &Notify, stop: &AtomicBool, stopped: &Notify) {
    #[allow(irrefutable_let_patterns)] // without `sqlx-sqlite`
    let Pool::Postgres(pool) = pool
    else {
        return;
    };
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::SeqCst) {
        let listener = async {
            let channel: String = sqlx::query_scalar(crate::postgres::CHANNEL)
                .fetch_one(pool)
                .await?;
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(&channel).await?;
            // Jobs committed while no one listened: look once.
            woken.notify_waiters();
            loop {
                listener.recv().await?;
                woken.notify_waiters();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        let stopped = stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            result = listener => {
                if let Err(error) = result {
                    trace::database_error("listen", &error.into());
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut stopped => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            () = &mut stopped => return,
        }
    }
}

/// Without PostgreSQL there is nothing to listen to: workers poll.
#[cfg(not(feature = "postgres"))]
pub async fn listen(_: &Pool, _: &Notify, _: &AtomicBool, _: &Notify) {}

/// Runs a statement on a pooled connection, again after a short backoff while the database is
/// busy or the connection failed, a few times.
async fn with_retries<T, F, Fut>(shared: &Shared, mut statement: F) -> Result<T, sqlx::Error>
where
    F: FnMut(crate::asynchronous::OwnedConn) -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = Duration::from_millis(5);
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match shared.config.pool.acquire().await {
            Ok(conn) => statement(conn).await,
            Err(error) => Err(error),
        };
        match result {
            Err(error) if tries < 8 && retryable(&error) => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            result => return result,
        }
    }
}

/// Whether waiting and trying again may help: a busy SQLite database, a lost connection.
fn retryable(error: &sqlx::Error) -> bool {
    store::is_busy(error)
        || matches!(
            error,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
