//! The thread worker: the [life cycle](crate::lifecycle) on threads, over rusqlite. The same
//! parts as the async worker, a thread each: a producer that fetches for free slots only,
//! `concurrency` executors (a thread and connection each), a completer, and maintenance
//! (leases, rescues, suspects, timeouts).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, TransactionState};
use uuid::Uuid;

use crate::clock::Clock;
use crate::dead;
use crate::error::{lock, AttemptError, Error};
use crate::job::JobInfo;
use crate::leader::{Leadership, Prune, Pruner, GAUGES_EVERY, LEADER_LEASE, LEADER_RENEW};
use crate::lifecycle::{
    self, ClaimRequest, Claimed, Counters, Fetcher, FlushRetry, InFlight, Next, Persist,
    StaleWatch, WorkerStats, FLUSH_AFTER, FLUSH_JOBS,
};
use crate::meter;
use crate::meter::Gauges;
use crate::outcome;
use crate::periodic::{FireKind, SyncFire};
use crate::registry::{linked_jobs, Claimable, Lane, Queues};
use crate::schedule::Ticker;
use crate::scope::{JobScope, State};
use crate::sqlite;
use crate::timing::Timing;
use crate::timing::{Retention, RetryPolicy};
use crate::trace;
use crate::wake::WAKE;

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
    timing: Timing,
    busy_timeout: Duration,
    retention: Retention,
    queues: Queues,
}

impl WorkerBuilder {
    /// How long finished jobs are kept before the fleet's leader deletes them (default: done
    /// jobs 24 hours, dead, discarded and cancelled ones 14 days; see [`Retention`]). Whichever
    /// worker leads applies its own setting: give every worker of a fleet the same.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

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

    /// Runs the handlers of `queue` (`#[on(S, queue = "email")]`) on `limit` threads of their
    /// own: at most `limit` of its jobs run at once in this worker, apart from the
    /// [`concurrency`](Self::concurrency) that every other handler shares, so a burst of one
    /// queue's jobs neither starves the others nor is starved by them. A second call for one
    /// queue replaces its limit. The limit is this worker's: a fleet of three workers runs up
    /// to three times as many. See `docs/queues.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run() -> Result<(), signals_queue::Error> {
    /// let worker = signals_queue::Worker::builder("app.db")
    ///     .concurrency(4) // handlers without a queue, and queues not named here
    ///     .queue("email", 8) // slow provider: eight at a time, whatever else runs
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn queue(mut self, queue: impl Into<String>, limit: usize) -> Self {
        self.queues.set(queue.into(), limit);
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

    /// How long a statement waits for another connection's write lock (default 10 s). A
    /// statement still refused then is retried with backoff; the worker does not stop.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Checks the jobs table's schema (reading only: [`migrate`](crate::migrate) creates it),
    /// registers the worker's lease, and gathers the queued handlers linked into this program:
    /// the worker claims only their jobs.
    ///
    /// # Errors
    ///
    /// A database error, [`Error::SchemaOutdated`] before the migration, a schema newer than
    /// this crate, two queued handlers with one name, [`Error::NoHandlers`] when the program
    /// links neither a queued handler nor a periodic signal of a signal notified with
    /// `notify`, [`Error::Context`] when a handler's context cannot be built, or
    /// [`Error::Schedule`] for a periodic signal's wrong cron pattern or time zone.
    pub fn build(mut self) -> Result<Worker, Error> {
        self.timing = self.timing.bounded();
        let conn = sqlite::open(&self.path, self.busy_timeout)?;
        let (by_name, handlers) = linked_jobs(JobInfo::runs_on_worker)?;
        let (fires, ticker) = crate::registry::linked_periodic(|fire| match fire {
            FireKind::Sync(fire) => Some(fire),
            _ => None,
        })?;
        if by_name.is_empty() && fires.is_empty() {
            return Err(Error::NoHandlers {
                kind: "of a signal notified with `notify`",
            });
        }
        sqlite::check_schema(&conn)?;
        // Each handler's context, built once from a transaction that runs no statement: a missing
        // piece of state is an error now, not at the first job.
        let tx = conn.unchecked_transaction()?;
        for job in by_name.values() {
            let scope = JobScope {
                tx: &tx,
                state: &self.state,
                job_id: 0,
                event_id: Uuid::nil(),
                attempt: 0,
            };
            job.check_context(scope).map_err(|source| Error::Context {
                job: job.name(),
                source,
            })?;
        }
        drop(tx);
        let worker = lifecycle::worker_id();
        with_retries(|| {
            sqlite::heartbeat(&conn, worker, self.timing.lease, self.timing.clock.fixed())
        })?;
        // For tools that link none of the handlers (the `signals-queue` command line).
        let linked: Vec<&'static JobInfo> = by_name.values().copied().collect();
        with_retries(|| sqlite::record_handlers(&conn, &linked, self.timing.clock.fixed()))?;
        let claimable = Claimable::new(&by_name, self.concurrency, &self.queues);
        let suspect_lane = claimable
            .lanes()
            .iter()
            .position(Lane::is_used)
            .unwrap_or(0);
        claimable.set_paused(with_retries(|| sqlite::paused_queues(&conn))?);
        Ok(Worker {
            shared: Arc::new(Shared {
                config: self,
                jobs: by_name,
                handlers,
                claimable,
                suspect_lane,
                worker,
                stop: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                retire: AtomicBool::new(false),
                suspects: AtomicBool::new(false),
                slots: Mutex::new(Slots::default()),
                changed: Condvar::new(),
                ticked: Condvar::new(),
                counters: Counters::default(),
                in_flight: InFlight::default(),
                leadership: Leadership::default(),
                fires,
            }),
            ticker,
        })
    }
}

/// Runs the jobs of the queued handlers linked into this program, from a SQLite database file.
///
/// Each job runs in a transaction of the worker's own: the handler's context is built from it
/// ([`FromJob`](crate::FromJob)), the handler runs, and if it wrote, the job is marked done in
/// that same transaction, so a handler whose effects are database writes takes effect exactly
/// once. A handler that wrote nothing is completed with others, in one statement. Effects
/// outside the database (an email) happen at least once: a worker that dies after sending and
/// before committing sends again on the retry; use [`JobScope::job_id`](crate::JobScope::job_id)
/// or `event_id` as an idempotency key.
pub struct Worker {
    shared: Arc<Shared>,
    /// The periodic signals it fires while it leads the fleet.
    ticker: Ticker,
}

/// The jobs the executors run, for slot counting, heartbeats and timeouts.
#[derive(Default)]
struct Slots {
    /// By job id and claim token (a fenced-off attempt may still run beside its retry): the
    /// job, when it started, its timeout, and whether it was fenced off.
    running: HashMap<(i64, i64), Running>,
    /// A suspect runs: nothing else may.
    solo: bool,
}

struct Running {
    job: Claimed,
    /// The lane whose producer claimed it.
    lane: usize,
    info: &'static JobInfo,
    started: Instant,
    timeout: Duration,
    fenced: bool,
}

/// What the worker's threads share.
struct Shared {
    config: WorkerBuilder,
    jobs: HashMap<&'static str, &'static JobInfo>,
    /// The linked handlers as the statements take them (see `LinkedJobs`).
    handlers: String,
    /// The handlers claims take, by lane: the linked ones less those of paused queues.
    claimable: Claimable,
    /// The lane whose producer runs suspects (the first with handlers).
    suspect_lane: usize,
    worker: i64,
    /// Stop fetching (shutdown began).
    stop: AtomicBool,
    /// The completer flushes what it has and stops (the executors stopped, or hung).
    closing: AtomicBool,
    /// Stop renewing the lease (everything else stopped).
    retire: AtomicBool,
    /// A suspect is due: the producer runs it alone.
    suspects: AtomicBool,
    slots: Mutex<Slots>,
    /// Signalled when a slot frees, and at shutdown.
    changed: Condvar,
    /// Wakes maintenance early: at shutdown (it otherwise wakes every tick, not per job).
    ticked: Condvar,
    counters: Counters,
    /// The jobs claimed whose outcome is not recorded yet (maintenance records the rest).
    in_flight: InFlight,
    /// Whether this worker leads the fleet.
    leadership: Leadership,
    /// The periodic signals notified with `notify` linked into this program (in the order of
    /// the worker's `Ticker`).
    fires: Vec<SyncFire>,
}

impl Worker {
    /// A worker over the SQLite database at `path`; see [`WorkerBuilder`].
    pub fn builder(path: impl Into<PathBuf>) -> WorkerBuilder {
        WorkerBuilder {
            path: path.into(),
            state: State::given_by("WorkerBuilder"),
            concurrency: 1,
            timing: Timing::default(),
            busy_timeout: crate::timing::SQLITE_BUSY_TIMEOUT,
            retention: Retention::default(),
            queues: Queues::default(),
        }
    }

    /// The names of the queued handlers whose jobs this worker runs.
    pub fn handlers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shared.jobs.keys().copied()
    }

    /// Starts the worker's threads: a producer and its executors per lane (`concurrency`, and
    /// each [`queue`](WorkerBuilder::queue)'s limit), the completer,
    /// maintenance, and two for the fleet: one contends for the leadership (every second), the
    /// other, while this worker leads, fires the periodic signals, prunes finished jobs,
    /// announces dead ones ([`JobDead`](crate::JobDead)) and publishes the gauges (see
    /// `docs/scheduling.md`).
    ///
    /// # Errors
    ///
    /// [`Error::Thread`] if a thread cannot be spawned.
    pub fn start(self) -> Result<RunningWorker, Error> {
        let shared = self.shared;
        let (done, completions) = mpsc::channel::<(i64, i64)>();
        let mut executors = Vec::new();
        let mut producers = Vec::new();
        for (lane, spec) in shared.claimable.lanes().iter().enumerate() {
            if !spec.is_used() {
                continue;
            }
            let (jobs, queue) = mpsc::channel::<Claimed>();
            let queue = Arc::new(Mutex::new(queue));
            for i in 0..spec.limit {
                let (shared, queue, done) = (Arc::clone(&shared), Arc::clone(&queue), done.clone());
                let name = match lane {
                    0 => format!("signals-queue-{i}"),
                    _ => format!("signals-queue-{lane}-{i}"),
                };
                executors.push(spawn(name, move || execute(&shared, &queue, &done))?);
            }
            let shared = Arc::clone(&shared);
            producers.push(spawn(
                format!("signals-queue-producer-{lane}"),
                move || produce(&shared, lane, jobs),
            )?);
        }
        drop(done);
        let completer = {
            let shared = Arc::clone(&shared);
            spawn("signals-queue-completer".into(), move || {
                complete(&shared, &completions)
            })?
        };
        let maintenance = {
            let shared = Arc::clone(&shared);
            spawn("signals-queue-maintenance".into(), move || {
                maintain(&shared)
            })?
        };
        let leader = {
            let shared = Arc::clone(&shared);
            spawn("signals-queue-leader".into(), move || lead(&shared))?
        };
        let fleet = {
            let shared = Arc::clone(&shared);
            let mut ticker = self.ticker;
            let mut pruner = Pruner::new(shared.config.retention);
            let work = move || serve_fleet(&shared, &mut ticker, &mut pruner);
            spawn("signals-queue-fleet".into(), work)?
        };
        Ok(RunningWorker {
            shared,
            threads: Some(Threads {
                producers,
                executors,
                completer,
                maintenance,
                leader,
                fleet,
            }),
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
        running.shutdown(Duration::from_secs(60)).map(drop)
    }
}

fn spawn(name: String, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name)
        .spawn(run)
        .map_err(Error::Thread)
}

struct Threads {
    /// One per lane with handlers.
    producers: Vec<JoinHandle<()>>,
    executors: Vec<JoinHandle<()>>,
    completer: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    leader: JoinHandle<()>,
    /// Fires the periodic signals and prunes finished jobs while the worker leads.
    fleet: JoinHandle<()>,
}

/// A started [`Worker`]; [`shutdown`](Self::shutdown) stops it. Dropping it stops it too,
/// letting running handlers finish.
#[must_use = "dropping the running worker stops it; keep it and call `shutdown`"]
pub struct RunningWorker {
    shared: Arc<Shared>,
    threads: Option<Threads>,
}

impl RunningWorker {
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
    pub fn wait_idle(&self) -> Result<(), Error> {
        let conn = sqlite::open(&self.shared.config.path, self.shared.config.busy_timeout)?;
        loop {
            // A paused queue's jobs do not keep the worker busy.
            let handlers = self.shared.claimable.json();
            let now = self.shared.config.timing.clock.fixed();
            let busy: i64 = match sqlite::busy(&conn, &handlers, now) {
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

    /// Stops fetching and waits up to `grace` for the running handlers, renewing the lease
    /// meanwhile (no other worker takes their jobs). Then flushes the completions and retires
    /// the lease. A handler still running after `grace` is left to finish on its own thread;
    /// its job is failed (retried after a backoff) and fenced off, so its late completion is
    /// refused.
    ///
    /// Returns what the worker did, final (the counters [`stats`](Self::stats) reads while it
    /// runs may trail the database by the jobs whose commit has just returned).
    ///
    /// # Errors
    ///
    /// None today; reserved.
    pub fn shutdown(mut self, grace: Duration) -> Result<WorkerStats, Error> {
        self.stop(grace);
        Ok(self.stats())
    }

    fn stop(&mut self, grace: Duration) {
        let Some(threads) = self.threads.take() else {
            return;
        };
        let shared = &self.shared;
        shared.stop.store(true, Ordering::SeqCst);
        notify(shared);
        WAKE.notify();
        let _ = threads.leader.join(); // resigns: another worker leads at once
        let _ = threads.fleet.join();
        for producer in threads.producers {
            let _ = producer.join(); // closes its executors' channel
        }
        let deadline = Instant::now() + grace;
        {
            let mut slots = lock(&shared.slots);
            while !slots.running.is_empty() && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                slots = shared
                    .changed
                    .wait_timeout(slots, left.min(Duration::from_millis(50)))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
        }
        fail_overdue(shared, |_| true, &AttemptError::Shutdown);
        for executor in threads.executors {
            if executor.is_finished() {
                let _ = executor.join();
            }
        }
        // Flush what the finished handlers left before the lease goes (a hung handler's job was
        // failed above: its completion, if it ever comes, would be refused).
        shared.closing.store(true, Ordering::SeqCst);
        let _ = threads.completer.join();
        shared.retire.store(true, Ordering::SeqCst);
        notify(shared);
        let _ = threads.maintenance.join();
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(60));
    }
}

fn notify(shared: &Shared) {
    let _slots = lock(&shared.slots);
    shared.changed.notify_all();
    shared.ticked.notify_all();
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A connection, retried with backoff while the database cannot be opened.
    fn connect(&self) -> Option<Connection> {
        let mut backoff = Duration::from_millis(10);
        loop {
            match sqlite::open(&self.config.path, self.config.busy_timeout) {
                Ok(conn) => return Some(conn),
                Err(error) if self.stopping() => {
                    trace::database_error("open", &error);
                    return None;
                }
                Err(error) => {
                    trace::database_error("open", &error);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Lane `lane`'s producer: claims jobs of its handlers for free slots only and hands each to
/// an executor at once. A suspect runs alone in the worker: the suspect lane's producer claims
/// it once every lane is empty, and meanwhile (and while it runs) the other lanes claim
/// nothing.
fn produce(shared: &Shared, lane: usize, jobs: Sender<Claimed>) {
    let Some(conn) = shared.connect() else {
        return;
    };
    let mut seen = WAKE.generation();
    // After a wake-up the new job is not visible until its writer commits: look again soon.
    let mut soon: Option<Duration> = None;
    let mut backoff = Duration::from_millis(10);
    let mut fetcher = Fetcher::new(shared.claimable.lanes()[lane].limit);
    while !shared.stopping() {
        let (want, suspects) = {
            let mut slots = lock(&shared.slots);
            let flagged = shared.suspects.load(Ordering::SeqCst);
            let own = slots
                .running
                .values()
                .filter(|job| job.lane == lane)
                .count();
            let (held, solo, suspects) = match lane == shared.suspect_lane {
                true if flagged => (slots.running.len(), slots.solo, true),
                true => (own, slots.solo, false),
                false => (own, slots.solo || flagged, false),
            };
            match fetcher.next(held, 0, solo, suspects, Instant::now()) {
                Next::WaitForSlot => {
                    let _ = shared
                        .changed
                        .wait_timeout(slots, shared.config.timing.poll_interval);
                    continue;
                }
                Next::GatherUntil(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    let _ = shared.changed.wait_timeout(slots, left);
                    continue;
                }
                Next::Fetch { limit, suspects } => {
                    if suspects {
                        slots.solo = true; // claimed below, or given up
                    }
                    (limit, suspects)
                }
            }
        };
        let now = shared.config.timing.clock.fixed();
        let handlers = match suspects {
            true => shared.claimable.json(),
            false => shared.claimable.lane(lane),
        };
        // Woken for a job another connection is still committing: look (a read, which does not
        // wait for that writer) before claiming (a write, which would queue behind it).
        if soon.is_some() && !suspects && !sqlite::runnable(&conn, &handlers, now).unwrap_or(true) {
            (seen, soon) = wait_for_jobs(shared, seen, soon);
            continue;
        }
        let request = ClaimRequest {
            handlers: &handlers,
            limit: want,
            suspects,
            worker: shared.worker,
            now,
            token: lifecycle::token(),
        };
        Counters::add(&shared.counters.fetches, 1);
        shared.in_flight.claiming(request.token);
        let asked = Instant::now();
        let claim = sqlite::claim(&conn, &request);
        let took: &[Claimed] = claim.as_deref().unwrap_or(&[]);
        shared.in_flight.claimed(request.token, took);
        match claim {
            Ok(claimed) => {
                Counters::add(&shared.counters.claimed, claimed.len() as u64);
                backoff = Duration::from_millis(10);
                let full = fetcher.fetched(want, claimed.len(), asked.elapsed());
                if suspects && claimed.is_empty() {
                    shared.suspects.store(false, Ordering::SeqCst);
                    lock(&shared.slots).solo = false;
                }
                let mut slots = lock(&shared.slots);
                for job in claimed {
                    let Some(&info) = shared.jobs.get(job.handler.as_str()) else {
                        continue;
                    };
                    let timeout = lifecycle::attempt_timeout(info.timeout(), &shared.config.timing);
                    slots.running.insert(
                        (job.id, job.token),
                        Running {
                            job: job.clone(),
                            lane,
                            info,
                            started: Instant::now(),
                            timeout,
                            fenced: false,
                        },
                    );
                    let _ = jobs.send(job);
                }
                drop(slots);
                if full || suspects {
                    soon = None;
                    continue;
                }
                (seen, soon) = wait_for_jobs(shared, seen, soon);
            }
            Err(error) => {
                if suspects {
                    lock(&shared.slots).solo = false;
                }
                trace::database_error("claim", &error.into());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Waits for a wake-up from this process, or the poll interval; the generation seen and when
/// to look again.
fn wait_for_jobs(shared: &Shared, seen: u64, soon: Option<Duration>) -> (u64, Option<Duration>) {
    let generation = WAKE.wait(seen, soon.unwrap_or(shared.config.timing.poll_interval));
    if generation != seen {
        return (generation, Some(Duration::from_micros(200)));
    }
    let soon = soon
        .map(|d| d * 2)
        .filter(|d| *d < shared.config.timing.poll_interval);
    (generation, soon)
}

/// An executor thread: runs the jobs the producer hands it, one at a time.
fn execute(shared: &Shared, queue: &Mutex<Receiver<Claimed>>, done: &Sender<(i64, i64)>) {
    let Some(mut conn) = shared.connect() else {
        return;
    };
    loop {
        let next = lock(queue).recv();
        let Ok(job) = next else {
            return; // the producer stopped
        };
        if let Some(&info) = shared.jobs.get(job.handler.as_str()) {
            run_one(shared, &mut conn, info, &job, done);
        }
        let mut slots = lock(&shared.slots);
        slots.running.remove(&(job.id, job.token));
        if slots.running.is_empty() {
            slots.solo = false;
        }
        shared.changed.notify_all();
    }
}

/// Runs one job and records its outcome.
fn run_one(
    shared: &Shared,
    conn: &mut Connection,
    info: &JobInfo,
    job: &Claimed,
    done: &Sender<(i64, i64)>,
) {
    let span = trace::attempt(job, info);
    let _entered = span.enter();
    let started = Instant::now();
    meter::started(job, info, shared.config.timing.clock.now());
    let outcome = attempt(shared, conn, info, job);
    meter::ran(info, started.elapsed());
    match &outcome {
        Ok(Completion::Committed) => outcome::completed_in_transaction(&shared.counters, info),
        Ok(Completion::Deferred) => {
            let _ = done.send((job.id, job.token));
        }
        Ok(Completion::LeaseLost) => trace::lease_lost(job),
        Err(error) => record_failure(shared, conn, info, job, error),
    }
    if !matches!(outcome, Ok(Completion::Deferred)) {
        shared.in_flight.release(job.id); // the completer releases deferred ones
    }
}

/// How a successful attempt was completed.
enum Completion {
    /// In the handler's transaction, with its writes.
    Committed,
    /// The handler wrote nothing: the completer completes it.
    Deferred,
    /// The claim no longer held the job (a timeout fenced it off, or it was rescued).
    LeaseLost,
}

/// Runs the handler in a deferred transaction (no lock until its first statement; the write lock
/// at its first write); if it wrote, completes the job in that transaction. A busy database is
/// a failed attempt, never a silent re-run of the handler; a handler that read, then wrote
/// after another connection's commit, fails with [`AttemptError::BusySnapshot`], which says
/// how to reorder it.
fn attempt(
    shared: &Shared,
    conn: &mut Connection,
    info: &JobInfo,
    job: &Claimed,
) -> Result<Completion, AttemptError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let scope = JobScope {
        tx: &tx,
        state: &shared.config.state,
        job_id: job.id,
        event_id: Uuid::parse_str(&job.event_id).unwrap_or_default(),
        attempt: job.attempt,
    };
    match catch_unwind(AssertUnwindSafe(|| info.run(&job.payload, scope))) {
        Err(panic) => return Err(AttemptError::panic(&*panic)),
        // Read, then a write refused for another connection's write: `SQLITE_BUSY_SNAPSHOT`
        // after its commit, or `SQLITE_BUSY` at once while it still holds the lock.
        Ok(Err(error))
            if sqlite::is_busy_snapshot(&error)
                || (sqlite::is_busy_attempt(&error)
                    && tx.transaction_state(None::<&str>).ok() == Some(TransactionState::Read)) =>
        {
            return Err(AttemptError::BusySnapshot)
        }
        Ok(Err(error)) => return Err(error),
        Ok(Ok(())) => {}
    }
    if tx.transaction_state(None::<&str>)? != TransactionState::Write {
        tx.commit()?;
        return Ok(Completion::Deferred);
    }
    if !sqlite::complete(&tx, job, shared.config.timing.clock.fixed())? {
        return Ok(Completion::LeaseLost);
    }
    tx.commit()?;
    Ok(Completion::Committed)
}

/// Records a failed attempt: pending again after a backoff, or dead.
fn record_failure(
    shared: &Shared,
    conn: &Connection,
    info: &JobInfo,
    job: &Claimed,
    error: &AttemptError,
) {
    let message = error.to_string();
    let failure = lifecycle::failure(job, error, &message, &shared.config.timing);
    // Tried again, whatever the error, until the lease would lapse; then the job is left to
    // maintenance, which fails it once nothing holds it (an orphan).
    let mut persist = Persist::for_lease(shared.config.timing.lease);
    let recorded = loop {
        match with_retries(|| sqlite::fail(conn, job, &failure)) {
            Ok(recorded) => break recorded,
            Err(error) => {
                trace::database_error("fail", &error.into());
                match persist.again() {
                    Some(pause) => std::thread::sleep(pause),
                    None => break false,
                }
            }
        }
    };
    outcome::failed(&shared.counters, job, info, error, &failure, recorded);
}

/// The completer: completes the jobs whose handlers wrote nothing, many to one statement.
fn complete(shared: &Shared, completions: &Receiver<(i64, i64)>) {
    let Some(conn) = shared.connect() else {
        return;
    };
    let mut batch = Vec::with_capacity(FLUSH_JOBS);
    loop {
        match completions.recv_timeout(FLUSH_AFTER) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) if !shared.closing.load(Ordering::SeqCst) => continue,
            Err(_) => return,
        }
        let deadline = Instant::now() + FLUSH_AFTER;
        while batch.len() < FLUSH_JOBS {
            let left = deadline.saturating_duration_since(Instant::now());
            match completions.recv_timeout(left) {
                Ok(next) => batch.push(next),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut retry = FlushRetry::default();
        loop {
            retry.closing(
                shared.closing.load(Ordering::SeqCst),
                shared.config.timing.lease,
            );
            match sqlite::complete_many(&conn, &batch, shared.config.timing.clock.fixed()) {
                Ok(handlers) => {
                    let (counters, in_flight) = (&shared.counters, &shared.in_flight);
                    outcome::flushed(counters, in_flight, &batch, &handlers, &shared.jobs);
                    break;
                }
                Err(error) => {
                    trace::database_error("complete", &error.into());
                    let Some(pause) = retry.again() else {
                        outcome::flush_abandoned(&batch);
                        break;
                    };
                    std::thread::sleep(pause);
                }
            }
        }
        batch.clear();
    }
}

/// Maintenance: renews the lease every third of it, rescues dead workers' jobs, spots due
/// suspects, and fails (and fences off) handlers past their timeout; until retired.
fn maintain(shared: &Shared) {
    let Some(conn) = shared.connect() else {
        return;
    };
    let (renew_every, tick) = lifecycle::maintenance_ticks(
        shared.config.timing.lease,
        shared.config.timing.poll_interval,
    );
    let mut watch = StaleWatch::default();
    let mut renewed: Option<Instant> = None;
    let now = || shared.config.timing.clock.fixed();
    while !shared.retire.load(Ordering::SeqCst) {
        if renewed.is_none_or(|at| at.elapsed() >= renew_every) {
            let lease = shared.config.timing.lease;
            match with_retries(|| sqlite::heartbeat(&conn, shared.worker, lease, now())) {
                Ok(()) => renewed = Some(Instant::now()),
                Err(error) => trace::database_error("heartbeat", &error.into()),
            }
        }
        let retry = &shared.config.timing.retry;
        match with_retries(|| sqlite::rescue(&conn, shared.worker, &mut watch, retry, now())) {
            Ok(0) => {}
            Ok(rescued) => {
                trace::rescued(rescued);
                WAKE.notify();
            }
            Err(error) => trace::database_error("rescue", &error.into()),
        }
        if let Err(error) = record_orphans(shared, &conn) {
            trace::database_error("orphans", &error.into());
        }
        if let Err(error) = follow_operators(shared, &conn) {
            trace::database_error("paused queues and cancellations", &error.into());
        }
        let running = lock(&shared.slots).running.len();
        let wait = lifecycle::suspect_wait(running, shared.config.timing.lease);
        if let Ok(true) =
            sqlite::reserve_suspect(&conn, &shared.handlers, shared.worker, wait, now())
        {
            if !shared.suspects.swap(true, Ordering::SeqCst) {
                notify(shared);
            }
        }
        fail_overdue(
            shared,
            |running| running.started.elapsed() > running.timeout,
            &AttemptError::TimedOut(Duration::ZERO),
        );
        let slots = lock(&shared.slots);
        if !shared.retire.load(Ordering::SeqCst) {
            let _ = shared.ticked.wait_timeout(slots, tick);
        }
    }
    let _ = sqlite::retire(&conn, shared.worker);
}

/// Sleeps `pause`, or until shutdown begins; whether the worker still runs.
fn pause(shared: &Shared, pause: Duration) -> bool {
    let slots = lock(&shared.slots);
    if !shared.stopping() {
        let _ = shared.ticked.wait_timeout(slots, pause);
    }
    !shared.stopping()
}

/// Takes or renews the fleet's leadership every [`LEADER_RENEW`] until shutdown, then resigns
/// (see [`leader`](crate::leader)).
fn lead(shared: &Shared) {
    let Some(conn) = shared.connect() else {
        return;
    };
    let clock = &shared.config.timing.clock;
    loop {
        let sent = Instant::now();
        match with_retries(|| sqlite::elect(&conn, shared.worker, LEADER_LEASE, clock.fixed())) {
            Ok(Some(now)) => {
                if shared.leadership.held(sent, LEADER_LEASE, now) {
                    trace::leadership(shared.worker, true);
                    notify(shared); // the ticks thread fires at once
                }
            }
            Ok(None) => {
                if shared.leadership.lost() {
                    trace::leadership(shared.worker, false);
                }
            }
            Err(error) => trace::database_error("leader", &error.into()),
        }
        if !pause(shared, LEADER_RENEW) {
            break;
        }
    }
    if shared.leadership.lost() {
        trace::leadership(shared.worker, false);
    }
    let _ = sqlite::resign(&conn, shared.worker);
}

/// While this worker leads, fires each due tick of the periodic signals notified with
/// `notify`, one transaction each, and prunes finished jobs a batch at a time between them;
/// sleeps until the next tick or batch (a second at most).
fn serve_fleet(shared: &Shared, ticker: &mut Ticker, pruner: &mut Pruner) {
    let Some(mut conn) = shared.connect() else {
        return;
    };
    let clock = &shared.config.timing.clock;
    let mut term = shared.leadership.term();
    let mut gauges = Gauges::default();
    let mut gauges_at: Option<Instant> = None;
    loop {
        let now = match shared.leadership.is_leader() {
            true => clock.fixed().or_else(|| shared.leadership.now()),
            false => None,
        };
        if now.is_none() {
            gauges.clear();
            gauges_at = None;
        } else if gauges_at.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
            gauges_at = Some(Instant::now());
            match with_retries(|| sqlite::overview(&conn, clock.fixed())) {
                Ok(rows) => gauges.publish(&rows, clock.now()),
                Err(error) => trace::database_error("gauges", &error.into()),
            }
        }
        let wait = match now {
            Some(now) => {
                if shared.leadership.term() != term {
                    term = shared.leadership.term();
                    ticker.forget(); // another worker may have led meanwhile
                }
                for index in ticker.looking(now) {
                    if !shared.leadership.is_leader() || shared.stopping() {
                        break; // a leader that lost the lease stops at once
                    }
                    fire_due(shared, &mut conn, ticker, index, now);
                }
                match with_retries(|| sqlite::unannounced(&conn)) {
                    Ok(rows) if rows.is_empty() => {}
                    Ok(rows) => {
                        if let Err(error) = dead::announce(&mut conn, rows, &shared.config.state) {
                            trace::announce_failed(&*error);
                        }
                    }
                    Err(error) => trace::database_error("announce", &error.into()),
                }
                if let Some(prune) = pruner.next(now).filter(|_| shared.leadership.is_leader()) {
                    let started = Instant::now();
                    let batch = with_retries(|| match prune {
                        Prune::Done(before) => {
                            sqlite::purge_done_batch(&conn, before).map(|n| n as u64)
                        }
                        Prune::Dead(before) => sqlite::purge_finished_batch(&conn, before),
                        Prune::Ticks(before) => sqlite::prune_ticks_batch(&conn, before),
                    });
                    outcome::pruned(pruner, batch, started.elapsed());
                }
                ticker.wait(now, LEADER_RENEW).min(pruner.wait())
            }
            None => LEADER_RENEW,
        };
        if !pause(shared, wait.max(Duration::from_millis(1))) {
            gauges.clear();
            return;
        }
    }
}

/// Fires the due tick of the signal `index`, if any: records it and, unless another worker
/// did, notifies the signal in the same transaction.
fn fire_due(shared: &Shared, conn: &mut Connection, ticker: &mut Ticker, index: usize, now: i64) {
    let signal = ticker.path(index);
    if ticker.needs_last(index) {
        match with_retries(|| sqlite::last_tick(conn, signal)) {
            Ok(last) => ticker.set_last(index, last),
            Err(error) => return trace::database_error("leader", &error.into()),
        }
    }
    let Some(tick) = ticker.due(index, now) else {
        return;
    };
    let fire = shared.fires[index];
    let fired = (|| -> Result<bool, signals_core::BoxError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let clock = shared.config.timing.clock.fixed();
        if !sqlite::record_tick(&tx, signal, tick, shared.worker, clock)? {
            return Ok(false);
        }
        let scope = JobScope {
            tx: &tx,
            state: &shared.config.state,
            job_id: 0,
            event_id: Uuid::now_v7(),
            attempt: 1,
        };
        match catch_unwind(AssertUnwindSafe(|| fire(tick, scope))) {
            Ok(result) => result?,
            Err(panic) => return Err(AttemptError::panic(&*panic).into()),
        }
        tx.commit()?;
        Ok(true)
    })();
    match fired {
        Ok(fired) => {
            if fired {
                trace::ticked(signal, tick);
            }
            ticker.fired(index, tick);
        }
        Err(error) => trace::tick_failed(signal, tick, &*error),
    }
}

/// What operators decided since the last tick: the paused queues (their handlers are not
/// claimed), and the running jobs they cancelled (fenced off: a thread cannot be stopped, but
/// the job's claim was revoked, so its commit is refused and nothing is recorded for it).
fn follow_operators(shared: &Shared, conn: &Connection) -> rusqlite::Result<()> {
    let paused = with_retries(|| sqlite::paused_queues(conn))?;
    if shared.claimable.set_paused(paused) {
        WAKE.notify();
    }
    let cancelled = with_retries(|| sqlite::cancelled_of(conn, &shared.in_flight.held()))?;
    if cancelled.is_empty() {
        return Ok(());
    }
    let mut slots = lock(&shared.slots);
    for running in slots.running.values_mut() {
        if cancelled.contains(&running.job.id) && !running.fenced {
            running.fenced = true;
            trace::cancelled(running.job.id);
        }
    }
    drop(slots);
    for id in cancelled {
        shared.in_flight.release(id);
    }
    Ok(())
}

/// Fails the running rows of this worker that nothing of it holds any more (their outcome could
/// not be recorded), the normal way: their attempts stay charged.
fn record_orphans(shared: &Shared, conn: &Connection) -> rusqlite::Result<()> {
    let running = with_retries(|| sqlite::running_of(conn, shared.worker))?;
    let orphans = shared
        .in_flight
        .orphans(&running, shared.config.timing.lease * 2);
    let now = shared.config.timing.clock.fixed();
    for (job, failure) in orphans.failures(&shared.config.timing.retry, None, now) {
        with_retries(|| sqlite::fail(conn, job, &failure))?;
    }
    Ok(())
}

/// Fails the running jobs `overdue` selects (once each) with `error` and fences them off: the
/// handler's late completion is refused, its writes roll back.
fn fail_overdue(shared: &Shared, overdue: impl Fn(&Running) -> bool, error: &AttemptError) {
    let fenced: Vec<(Claimed, &'static JobInfo, Duration)> = {
        let mut slots = lock(&shared.slots);
        slots
            .running
            .values_mut()
            .filter(|running| !running.fenced && overdue(running))
            .map(|running| {
                running.fenced = true;
                (running.job.clone(), running.info, running.timeout)
            })
            .collect()
    };
    if fenced.is_empty() {
        return;
    }
    let Some(conn) = shared.connect() else {
        return;
    };
    for (job, info, timeout) in fenced {
        let error = match error {
            AttemptError::TimedOut(_) => {
                trace::hung(&job, timeout);
                AttemptError::TimedOut(timeout)
            }
            _ => AttemptError::Shutdown,
        };
        record_failure(shared, &conn, info, &job, &error);
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
