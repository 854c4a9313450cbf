//! The async worker: the [life cycle](crate::lifecycle) on tokio, over sqlx. Its parts, one
//! task each, named as River names them:
//!
//! - `producer`: fetches jobs for its free slots (a few ahead while jobs are short) and starts
//!   an executor per job;
//! - `executor`: runs one job, with its lazy transaction and its timeout, and completes it;
//! - `completer`: completes the jobs that never opened their transaction, many per statement;
//! - `maintenance`: renews the worker's lease, rescues the jobs of dead workers, spots
//!   suspects;
//! - `notifier`: LISTENs on PostgreSQL and wakes the producer (a hint, never the delivery path);
//! - `leader`: contends for the fleet's leadership and, while leading, fires the asynchronous
//!   periodic signals.
//!
//! They share nothing but [`Shared`]; imports go one way: `mod` → `producer` → `executor`, and
//! each of them → `store`.

mod completer;
mod executor;
mod leader;
mod maintenance;
mod notifier;
mod producer;
mod shared;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::db::Pool;
use crate::error::Error;
use crate::job::JobInfo;
use crate::lifecycle::{self, Counters, InFlight, LeaseClock, WorkerStats};
use crate::registry::linked_jobs;
use crate::schedule::Ticker;
use crate::scope::State;
use crate::store;
use crate::timing::{RetryPolicy, Timing};
use shared::{Config, LaneState, Shared};

pub use maintenance::{maintain, Upkeep};
pub use notifier::listen;

/// How many connections of its own a worker opens: the fetches (of every lane), completions
/// and leases share them (a statement at a time each), and on PostgreSQL one more LISTENs.
fn own_connections(listens: bool) -> u32 {
    3 + u32::from(listens)
}

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
/// // Handlers borrow from this pool only while they use their transaction; the worker opens
/// // 4 connections of its own beside it.
/// let pool = Pool::connect("postgres://127.0.0.1/shop", 10).await?;
/// let running = AsyncWorker::builder(pool)
///     .state(Mailer)
///     .concurrency(200)
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
    fetch_ahead: usize,
    timing: Timing,
    listen: bool,
    retention: crate::timing::Retention,
    queues: crate::registry::Queues,
}

impl AsyncWorkerBuilder {
    /// Hands the worker a value that contexts reach with
    /// [`AsyncJobScope::state`](crate::AsyncJobScope::state); one per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// How many jobs run at once, each in a task of its own (default 1; any number: a job
    /// holds a connection of the pool only while it uses its transaction).
    pub fn concurrency(mut self, slots: usize) -> Self {
        self.concurrency = slots.max(1);
        self
    }

    /// Runs the handlers of `queue` (`#[on(S, queue = "email")]`) in `limit` slots of their
    /// own: at most `limit` of its jobs run at once in this worker, apart from the
    /// [`concurrency`](Self::concurrency) that every other handler shares, so a burst of one
    /// queue's jobs neither starves the others nor is starved by them. A second call for one
    /// queue replaces its limit. The limit is this worker's: a fleet of three workers runs up
    /// to three times as many. See `docs/queues.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run(pool: sqlx::PgPool) -> Result<(), signals_queue::Error> {
    /// let worker = signals_queue::AsyncWorker::builder(pool)
    ///     .concurrency(50) // handlers without a queue, and queues not named here
    ///     .queue("email", 20) // the email provider allows 20 connections
    ///     .queue("reports", 2) // heavy: two at a time
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn queue(mut self, queue: impl Into<String>, limit: usize) -> Self {
        self.queues.set(queue.into(), limit);
        self
    }

    /// How many claimed jobs may wait in the worker for a free slot while jobs are short
    /// (default [`DEFAULT_FETCH_AHEAD`](crate::lifecycle::DEFAULT_FETCH_AHEAD); `0`: fetch for free slots
    /// only).
    ///
    /// While recent jobs ran for less time than a claim takes, a fetch claims this many jobs
    /// more than the free slots, and they start as slots free up, while the next claim is under
    /// way: a worker at low concurrency then drains short jobs at the rate of one at high
    /// concurrency. Jobs that run longer than a claim (I/O-bound ones) are fetched for free
    /// slots only, so no job waits in one worker while another has room. The claim charges the
    /// attempt: a shutdown gives the waiting jobs back uncharged, but after a crash they are
    /// charged like the running ones and run alone as suspects, so keep this small.
    pub fn fetch_ahead(mut self, jobs: usize) -> Self {
        self.fetch_ahead = jobs;
        self
    }

    crate::__timing_setters!(
        lease: Duration,
        poll_interval: Duration,
        retry: RetryPolicy,
        job_timeout: Duration,
        payload_grace: Duration,
        clock: Clock,
    );

    /// How long finished jobs are kept before the fleet's leader deletes them (default: done
    /// jobs 24 hours, dead, discarded and cancelled ones 14 days; see
    /// [`Retention`](crate::Retention)). Whichever worker leads applies its own setting: give
    /// every worker of a fleet the same.
    pub fn retention(mut self, retention: crate::timing::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Whether to LISTEN for the jobs table's notifications on PostgreSQL (default `true`);
    /// without it the worker polls.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Checks the jobs table's schema (see [`AsyncQueue::migrate`](crate::AsyncQueue::migrate):
    /// a current schema is only read), opens the worker's own connections, registers its
    /// lease, and gathers the queued handlers of asynchronous signals linked into this
    /// program: the worker claims only their jobs.
    ///
    /// # Errors
    ///
    /// - [`Error::NoHandlers`]: no queued handler of an asynchronous signal, and no asynchronous
    ///   periodic signal, is linked into the program (nothing for the worker to run).
    /// - [`Error::Schedule`]: a periodic signal's cron pattern or time zone is wrong.
    /// - [`Error::Context`]: a handler's context cannot be built from this worker (most often a
    ///   piece of [`state`](Self::state) it asks for was not given; the error names the type).
    /// - [`Error::SchemaOutdated`] before the migration (`build` changes no schema:
    ///   [`AsyncQueue::migrate`](crate::AsyncQueue::migrate) does), or a schema newer than this
    ///   crate.
    /// - [`Error::WorkerConnections`] when the database cannot spare the worker's own
    ///   connections, or a pooler in transaction mode is in the way.
    /// - [`Error::DuplicateJobName`]: two queued handlers with one name.
    /// - Any database error.
    pub async fn build(mut self) -> Result<AsyncWorker, Error> {
        self.timing = self.timing.bounded();
        let (jobs, handlers) = linked_jobs(JobInfo::runs_on_async_worker)?;
        let (fires, ticker) = crate::registry::linked_periodic(|fire| match fire {
            crate::periodic::FireKind::Async(fire) => Some(fire),
            _ => None,
        })?;
        if jobs.is_empty() && fires.is_empty() {
            return Err(Error::NoHandlers {
                kind: "of an asynchronous signal",
            });
        }
        self.check_contexts(jobs.values().copied())?;
        store::check_schema(&self.pool).await?;
        let listens = self.listen && self.pool.is_postgres();
        let claimable = crate::registry::Claimable::new(&jobs, self.concurrency, &self.queues);
        let lanes = claimable
            .lanes()
            .iter()
            .map(|_| LaneState::default())
            .collect();
        let suspect_lane = claimable
            .lanes()
            .iter()
            .position(crate::registry::Lane::is_used)
            .unwrap_or(0);
        let own = open_own(&self.pool, own_connections(listens)).await?;
        store::check_session(&own).await?;
        let worker = lifecycle::worker_id();
        let mut conn = own.acquire().await?;
        store::heartbeat(
            conn.tx(),
            worker,
            self.timing.lease,
            self.timing.clock.fixed(),
        )
        .await?;
        // For tools that link none of the handlers (the `signals-queue` command line).
        let linked: Vec<&'static JobInfo> = jobs.values().copied().collect();
        store::record_handlers(conn.tx(), &linked, self.timing.clock.fixed()).await?;
        let (published, outbox) = linked_jobs(JobInfo::is_publish)?;
        let outbox = (!published.is_empty()).then_some(outbox);
        claimable.set_paused(store::paused_queues(conn.tx()).await?);
        drop(conn);
        Ok(AsyncWorker {
            shared: Arc::new(Shared {
                listens,
                config: Config {
                    pool: self.pool,
                    state: self.state,
                    fetch_ahead: self.fetch_ahead,
                    timing: self.timing,
                    retention: self.retention,
                },
                own,
                jobs,
                handlers,
                claimable,
                lanes,
                suspect_lane,
                solo: AtomicBool::new(false),
                aborts: std::sync::Mutex::new(std::collections::HashMap::new()),
                cancelled: Notify::new(),
                outbox,
                worker,
                stop: AtomicBool::new(false),
                stopped: Notify::new(),
                retire: AtomicBool::new(false),
                retired: Notify::new(),
                woken: Notify::new(),
                suspects: AtomicBool::new(false),
                running: std::sync::atomic::AtomicUsize::new(0),
                grace_ms: AtomicU64::new(60_000),
                counters: Counters::default(),
                in_flight: InFlight::default(),
                renewed: LeaseClock::default(),
                leadership: crate::leader::Leadership::default(),
                fires,
                elected: Notify::new(),
            }),
            ticker,
        })
    }
}

impl AsyncWorkerBuilder {
    /// Builds each handler's context once from a scope whose transaction is never opened: a
    /// missing piece of state is an error now, not at the first job.
    fn check_contexts(&self, jobs: impl Iterator<Item = &'static JobInfo>) -> Result<(), Error> {
        for job in jobs {
            let (mut job_tx, _) = crate::db::JobTx::new(self.pool.clone());
            let scope = crate::scope::AsyncJobScope {
                tx: crate::db::Tx::__Job(&mut job_tx),
                state: &self.state,
                job_id: 0,
                event_id: uuid::Uuid::nil(),
                attempt: 0,
            };
            job.check_context_async(scope)
                .map_err(|source| Error::Context {
                    job: job.name(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Opens the worker's own pool, every connection of it at once.
async fn open_own(pool: &Pool, connections: u32) -> Result<Pool, Error> {
    let refused = |source| Error::WorkerConnections {
        needed: connections,
        source,
    };
    let own = pool.dedicated(connections).await.map_err(refused)?;
    let opened = futures_util::future::join_all((0..connections).map(|_| own.acquire())).await;
    for conn in opened {
        conn.map_err(refused)?;
    }
    Ok(own)
}

/// Runs the jobs of the queued handlers of asynchronous signals linked into this program, on
/// tokio, from PostgreSQL or SQLite through sqlx; see the [life cycle](crate::lifecycle).
///
/// A job's handler gets a lazy transaction: it is begun on the pool at the handler's first use
/// and the job is completed in it, so its database effects happen exactly once. A job that
/// never used it holds no connection at all and is completed with others in one statement.
/// Several workers, in one process or many, share one table: a claim is
/// `FOR UPDATE SKIP LOCKED` on PostgreSQL, one `UPDATE` statement on SQLite.
pub struct AsyncWorker {
    shared: Arc<Shared>,
    /// The periodic signals it fires while it leads.
    ticker: Ticker,
}

impl AsyncWorker {
    /// A worker over `pool`; see [`AsyncWorkerBuilder`].
    pub fn builder(pool: impl Into<Pool>) -> AsyncWorkerBuilder {
        AsyncWorkerBuilder {
            pool: pool.into(),
            state: State::given_by("AsyncWorkerBuilder"),
            concurrency: 1,
            fetch_ahead: lifecycle::DEFAULT_FETCH_AHEAD,
            timing: Timing::default(),
            listen: true,
            retention: crate::timing::Retention::default(),
            queues: crate::registry::Queues::default(),
        }
    }

    /// The names of the queued handlers whose jobs this worker runs.
    pub fn handlers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shared.jobs.keys().copied()
    }

    /// Spawns the worker's tasks on the current tokio runtime: the producer (which spawns an
    /// executor per job), the completer, the maintenance task, on PostgreSQL the notifier, and
    /// the leader task: it contends for the fleet's leadership and, while this worker leads,
    /// fires the periodic signals, prunes finished jobs, announces dead ones
    /// ([`AsyncJobDead`](crate::AsyncJobDead)) and publishes the gauges (see
    /// `docs/scheduling.md`).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[must_use = "dropping the running worker aborts it at once; keep it and call `shutdown`"]
    pub fn start(self) -> RunningAsyncWorker {
        let shared = self.shared;
        let leading = Arc::clone(&shared);
        let ticker = self.ticker;
        let leader = tokio::spawn(async move { leader::lead(leading.leading(), ticker).await });
        let (done, completions) = tokio::sync::mpsc::unbounded_channel();
        let producers = (0..shared.lanes.len())
            .filter(|&lane| shared.claimable.lanes()[lane].is_used())
            .map(|lane| tokio::spawn(producer::produce(Arc::clone(&shared), lane, done.clone())))
            .collect();
        drop(done);
        let lanes = (shared.lanes.len() > 1).then(|| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { shared.wake_lanes().await })
        });
        let completer = tokio::spawn(completer::complete(Arc::clone(&shared), completions));
        let upkeep = Arc::clone(&shared);
        let maintenance = tokio::spawn(async move {
            let drop = |ids: &[i64]| upkeep.drop_jobs(ids);
            maintain(upkeep.upkeep(&drop)).await;
        });
        let notifier = shared.listens.then(|| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let Shared {
                    own,
                    woken,
                    cancelled,
                    retire,
                    retired,
                    ..
                } = &*shared;
                listen(own, woken, Some(cancelled), retire, retired).await;
            })
        });
        RunningAsyncWorker {
            shared,
            tasks: Some(Tasks {
                producers,
                lanes,
                completer,
                maintenance,
                notifier,
                leader,
            }),
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

/// The tasks of a started worker, each owned here: shutdown joins them, drop aborts them.
struct Tasks {
    /// One per lane with handlers.
    producers: Vec<JoinHandle<()>>,
    /// Passes wake-ups on to each lane's producer (with more than one lane).
    lanes: Option<JoinHandle<()>>,
    completer: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    notifier: Option<JoinHandle<()>>,
    leader: JoinHandle<()>,
}

/// A started [`AsyncWorker`]; [`shutdown`](Self::shutdown) stops it. Dropping it aborts its
/// tasks at once (a job cut off that way rolls back, and once the worker's lease lapses
/// another worker rescues it).
#[must_use = "dropping the running worker aborts it at once; keep it and call `shutdown`"]
pub struct RunningAsyncWorker {
    shared: Arc<Shared>,
    tasks: Option<Tasks>,
}

impl RunningAsyncWorker {
    /// What the worker has done since it started.
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }

    /// Waits until none of this worker's handlers has a job pending (waiting retries included)
    /// or running, in any process.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn wait_idle(&self) -> Result<(), Error> {
        loop {
            let busy = match self.shared.own.acquire().await {
                // A paused queue's jobs do not keep the worker busy.
                Ok(mut conn) => {
                    let handlers = self.shared.claimable.json();
                    store::busy(conn.tx(), &handlers, self.shared.now()).await
                }
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

    /// Runs until `shutdown` completes (a signal, a cancellation token, the future axum's
    /// `with_graceful_shutdown` takes too), then [`shutdown`](Self::shutdown)s with `grace`:
    /// one call that fits the application's own graceful shutdown.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(worker: signals_queue::AsyncWorker) -> Result<(), signals_queue::Error> {
    /// use std::time::Duration;
    ///
    /// // Your application's shutdown signal: Ctrl-C, SIGTERM, a cancellation token…
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # drop(stop);
    /// let shutdown = async {
    ///     let _ = stopped.await;
    /// };
    /// let stats = worker.start().run_until(shutdown, Duration::from_secs(30)).await?;
    /// println!("{} jobs failed", stats.failed);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`shutdown`](Self::shutdown).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<WorkerStats, Error> {
        shutdown.await;
        self.shutdown(grace).await
    }

    /// Stops fetching and waits up to `grace` for the running handlers; meanwhile the lease
    /// is renewed, so no other worker takes their jobs. Handlers still running after `grace`
    /// are cancelled (their transactions roll back) and their attempts recorded as failed,
    /// to be retried after a backoff. Then flushes the completions and retires the lease.
    ///
    /// Returns what the worker did, final: every job it ran is counted (the counters that
    /// [`stats`](Self::stats) reads while it runs may trail the database by the jobs whose
    /// commit has just returned).
    ///
    /// # Errors
    ///
    /// None today; reserved.
    pub async fn shutdown(mut self, grace: Duration) -> Result<WorkerStats, Error> {
        let Some(tasks) = self.tasks.take() else {
            return Ok(self.stats());
        };
        let shared = &self.shared;
        shared
            .grace_ms
            .store(grace.as_millis() as u64, Ordering::SeqCst);
        shared.stop.store(true, Ordering::SeqCst);
        shared.stopped.notify_waiters();
        shared.woken.notify_one();
        let _ = tasks.leader.await;
        for producer in tasks.producers {
            let _ = producer.await;
        }
        if let Some(lanes) = tasks.lanes {
            let _ = lanes.await;
        }
        let _ = tasks.completer.await;
        shared.retire.store(true, Ordering::SeqCst);
        shared.retired.notify_waiters();
        let _ = tasks.maintenance.await;
        if let Some(notifier) = tasks.notifier {
            let _ = notifier.await;
        }
        Ok(self.stats())
    }
}

impl Drop for RunningAsyncWorker {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.retire.store(true, Ordering::SeqCst);
            for producer in &tasks.producers {
                producer.abort();
            }
            if let Some(lanes) = &tasks.lanes {
                lanes.abort();
            }
            tasks.completer.abort();
            tasks.maintenance.abort();
            tasks.leader.abort();
            if let Some(notifier) = tasks.notifier {
                notifier.abort();
            }
        }
    }
}
