//! The relay: claims the jobs of the publishing functions linked into this program (the
//! outbox), publishes each message to JetStream with a `Nats-Msg-Id` fixed per event and
//! function, and marks a job done only after JetStream's PubAck. It follows the queue's life
//! cycle: a lease of its own, renewed by the queue's maintenance, which also records the rows
//! the relay let go of (orphans: their outcome could not be written before the lease would
//! lapse), as it does for a worker.

mod record;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use signals_queue::__broker::{
    self as queue, linked_jobs, listen, maintain, ClaimRequest, Claimed, Upkeep,
};
use signals_queue::{Clock, Error, JobInfo, Pool, RetryPolicy, Timing};

use crate::stream::create_or_update_stream;
use record::{Outcome, Recorder};

/// The `Nats-Msg-Id` of a publishing function's message: its event and the function, the same
/// on every attempt.
fn message_id(job: &Claimed) -> String {
    format!("{}:{}", job.event_id, job.handler)
}

/// Configures a [`Relay`]; every setting has a default.
#[must_use = "call `build().await` to get the relay"]
pub struct RelayBuilder {
    pool: Pool,
    js: jetstream::Context,
    in_flight: usize,
    /// The lease, polling, backoff and clock (the relay's defaults: polls every 100 ms,
    /// retries a failed publish after at most 30 s).
    timing: Timing,
    /// Dead once a failing message is older than this; `None`: never.
    max_age: Option<Duration>,
    prefix: String,
    /// The stream `build` creates or updates, and its subjects.
    stream: Option<(String, Vec<String>)>,
}

impl RelayBuilder {
    /// Creates the stream `name` over `subjects` in `build` if it is missing, or adds the
    /// subjects it lacks, as [`ensure_stream`](crate::stream::ensure_stream) does (default:
    /// the stream is set up elsewhere). The subjects include the
    /// [prefix](Self::subject_prefix), if any: `&["staging.shop.>"]`.
    pub fn create_stream(mut self, name: impl Into<String>, subjects: &[&str]) -> Self {
        let subjects = subjects.iter().map(|s| (*s).to_owned()).collect();
        self.stream = Some((name.into(), subjects));
        self
    }

    /// How many messages are published before their acks are awaited (default 256): one claim
    /// takes that many jobs.
    pub fn in_flight(mut self, messages: usize) -> Self {
        self.in_flight = messages.max(1);
        self
    }

    // The relay's lease: its maintenance renews it every third of the lease on a connection of
    // the pool the relay was given (the application shares that pool: leave room in it). A
    // relay that dies, or cannot renew, leaves its jobs to another after a lease; the stream
    // drops what it published twice. A refused completion is written again for up to a lease.
    signals_queue::__timing_setters!(
        lease: Duration,
        poll_interval: Duration,
        retry: RetryPolicy,
        clock: Clock,
    );

    /// How old a message may grow while publishing fails before it is dead (default: no limit:
    /// the outbox waits for the broker as long as it takes; a publishing function's messages
    /// have no attempt limit unless it sets `max_attempts`). A dead message is kept, and
    /// `AsyncQueue::retry_dead_of` brings it back.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Put before every subject (default none): `"staging."` publishes `shop.orders.created`
    /// as `staging.shop.orders.created`.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks, reading only, that the jobs table's schema is one this release works with (it
    /// never creates or migrates it: run the migration first, e.g. `AsyncQueue::migrate`),
    /// refuses a pool behind a transaction-mode pooler, creates or updates the stream with
    /// [`create_stream`](Self::create_stream), gathers the publishing functions linked into
    /// this program (the relay claims only their jobs) and registers the relay's lease.
    ///
    /// # Errors
    ///
    /// A database error, [`Error::SchemaOutdated`] (no table, or an older one: migrate
    /// first), [`Error::SchemaTooNew`], [`Error::TransactionPooler`], two publishing
    /// functions with one job name ([`Error::DuplicateJobName`]), or [`Error::Nats`] if
    /// JetStream refuses the stream.
    pub async fn build(mut self) -> Result<Relay, Error> {
        self.timing = self.timing.bounded();
        queue::check_schema(&self.pool).await?;
        queue::check_session(&self.pool).await?;
        if let Some((name, subjects)) = &self.stream {
            create_or_update_stream(&self.js, name, subjects).await?;
        }
        let (jobs, handlers) = linked_jobs(JobInfo::is_publish)?;
        // The relay follows the queue's life cycle: a lease of its own, renewed by the same
        // maintenance as a worker's, registered before its first claim.
        let worker = queue::worker_id();
        let mut conn = queue::acquire(&self.pool).await?;
        queue::heartbeat(
            conn.tx(),
            worker,
            self.timing.lease,
            queue::fixed_now(&self.timing.clock),
        )
        .await?;
        drop(conn);
        Ok(Relay {
            shared: Arc::new(RelayShared {
                config: self,
                jobs,
                handlers,
                worker,
                stop: AtomicBool::new(false),
                stopped: Notify::new(),
                retire: AtomicBool::new(false),
                retired: Notify::new(),
                woken: Notify::new(),
                in_flight: queue::InFlight::default(),
                suspects_due: AtomicBool::new(false),
                renewed: queue::LeaseClock::default(),
            }),
        })
    }
}

/// Publishes the messages of the publishing functions linked into this program from the jobs
/// table to JetStream; see the [crate documentation](crate).
///
/// # Examples
///
/// ```no_run
/// # async fn run(pool: signals_queue::Pool) -> Result<(), signals_queue::Error> {
/// use signals_broker::Relay;
///
/// let client = async_nats::connect("nats://127.0.0.1:4222").await.map_err(signals_queue::Error::nats)?;
/// let relay = Relay::builder(pool, client)
///     .create_stream("SHOP", &["shop.>"])
///     .build()
///     .await?
///     .start();
/// // ... the application runs ...
/// relay.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(())
/// # }
/// ```
pub struct Relay {
    shared: Arc<RelayShared>,
}

struct RelayShared {
    config: RelayBuilder,
    jobs: HashMap<&'static str, &'static JobInfo>,
    handlers: String,
    /// The relay's lease: the key of its row in `signals_workers`.
    worker: i64,
    stop: AtomicBool,
    stopped: Notify,
    /// Stop renewing the lease (the relay's loop has ended).
    retire: AtomicBool,
    retired: Notify,
    /// Woken by PostgreSQL's notifications of new jobs, and by rescues.
    woken: Notify,
    /// The jobs claimed whose outcome is not recorded yet: maintenance fails the relay's other
    /// running rows (orphans) the normal way, and gives back a claim whose reply was lost.
    in_flight: queue::InFlight,
    /// Set by maintenance while a suspect of the relay's functions is due.
    suspects_due: AtomicBool,
    /// When the relay's lease was last renewed.
    renewed: queue::LeaseClock,
}

impl RelayShared {
    fn upkeep(&self) -> Upkeep<'_> {
        Upkeep {
            pool: &self.config.pool,
            worker: self.worker,
            lease: self.config.timing.lease,
            tick: (self.config.timing.lease / 3).min(self.config.timing.poll_interval * 5),
            retry: &self.config.timing.retry,
            handlers: &self.handlers,
            clock: &self.config.timing.clock,
            woken: &self.woken,
            suspects: Some(&self.suspects_due),
            running: None,
            in_flight: Some(&self.in_flight),
            max_age: self.config.max_age,
            renewed: &self.renewed,
            retire: &self.retire,
            retired: &self.retired,
            claimable: None,
            cancel: None,
            outbox: None,
        }
    }

    /// The relay's `max_age`, in milliseconds.
    fn dead_after_ms(&self) -> Option<i64> {
        self.config.max_age.map(|age| age.as_millis() as i64)
    }
}

/// A relay's default timings: a worker's, but polling every 100 ms and retrying a failed publish
/// after at most 30 s, so that messages go out within 30 s of the broker's return after an
/// outage of any length.
fn relay_timing() -> Timing {
    let mut timing = Timing::default();
    timing.poll_interval = Duration::from_millis(100);
    timing.retry = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(30),
    };
    timing
}

impl Relay {
    /// A relay from the jobs table in `pool` to JetStream through `client`.
    pub fn builder(pool: impl Into<Pool>, client: async_nats::Client) -> RelayBuilder {
        RelayBuilder {
            pool: pool.into(),
            js: jetstream::new(client),
            in_flight: 256,
            timing: relay_timing(),
            max_age: None,
            prefix: String::new(),
            stream: None,
        }
    }

    /// The names of the publishing functions whose messages this relay publishes.
    pub fn handlers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shared.jobs.keys().copied()
    }

    /// Spawns the relay's task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[must_use = "dropping the running relay aborts it at once; keep it and call `shutdown`"]
    pub fn start(self) -> RunningRelay {
        let shared = Arc::clone(&self.shared);
        let listener = tokio::spawn(async move {
            let RelayShared {
                config,
                woken,
                stop,
                stopped,
                ..
            } = &*shared;
            listen(&config.pool, woken, None, stop, stopped).await;
        });
        let shared = Arc::clone(&self.shared);
        // The queue's maintenance: the lease, rescues, orphans.
        let maintenance = tokio::spawn(async move { maintain(shared.upkeep()).await });
        let task = tokio::spawn(relay(Arc::clone(&self.shared)));
        RunningRelay {
            shared: self.shared,
            tasks: Some(RelayTasks {
                relay: task,
                listener,
                maintenance,
            }),
        }
    }

    /// Publishes until no message is waiting (retries included) or being published, then stops.
    ///
    /// # Errors
    ///
    /// A database error while checking for work.
    pub async fn run_until_idle(self) -> Result<(), Error> {
        let running = self.start();
        let idle = running.wait_idle().await;
        running.shutdown(Duration::from_secs(60)).await;
        idle
    }
}

/// A started [`Relay`]; dropping it aborts its task.
#[must_use = "dropping the running relay aborts it at once; keep it and call `shutdown`"]
pub struct RunningRelay {
    shared: Arc<RelayShared>,
    tasks: Option<RelayTasks>,
}

/// A started relay's tasks, each owned here: shutdown joins them, drop aborts them.
struct RelayTasks {
    relay: JoinHandle<()>,
    listener: JoinHandle<()>,
    maintenance: JoinHandle<()>,
}

impl RunningRelay {
    /// Waits until no message of this relay's functions is waiting or being published.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn wait_idle(&self) -> Result<(), Error> {
        loop {
            let mut conn = queue::acquire(&self.shared.config.pool).await?;
            let now = queue::fixed_now(&self.shared.config.timing.clock);
            if queue::busy(conn.tx(), &self.shared.handlers, now).await? == 0 {
                return Ok(());
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs until `shutdown` completes (the future the application's graceful shutdown waits
    /// on too), then [`shutdown`](Self::shutdown)s with `grace`.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>, grace: Duration) {
        shutdown.await;
        self.shutdown(grace).await;
    }

    /// Stops claiming, lets the messages in flight be acked and recorded, within `grace`, then
    /// retires the relay's lease (its lease is renewed until then).
    pub async fn shutdown(mut self, grace: Duration) {
        let Some(tasks) = self.tasks.take() else {
            return;
        };
        let shared = &self.shared;
        shared.stop.store(true, Ordering::SeqCst);
        shared.stopped.notify_waiters();
        let abort = tasks.relay.abort_handle();
        if tokio::time::timeout(grace, tasks.relay).await.is_err() {
            abort.abort();
        }
        let _ = tasks.listener.await;
        shared.retire.store(true, Ordering::SeqCst);
        shared.retired.notify_waiters();
        let _ = tasks.maintenance.await;
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.retire.store(true, Ordering::SeqCst);
            tasks.relay.abort();
            tasks.listener.abort();
            tasks.maintenance.abort();
        }
    }
}

/// The relay's loop: claim, publish with acks in flight, record. Its maintenance task renews
/// its lease and rescues the jobs of dead workers and relays.
async fn relay(shared: Arc<RelayShared>) {
    let mut backoff = Duration::from_millis(10);
    while !shared.stop.load(Ordering::SeqCst) {
        let local = queue::WAKE.notified();
        tokio::pin!(local);
        local.as_mut().enable();
        let woken = shared.woken.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let stopped = shared.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        match claim_batch(&shared).await {
            Ok(jobs) if jobs.is_empty() => {
                tokio::select! {
                    // Written in this process, maybe not committed yet: look again shortly.
                    () = &mut local => tokio::time::sleep(Duration::from_micros(500)).await,
                    // Committed (PostgreSQL notifies at commit).
                    () = &mut woken => {}
                    () = tokio::time::sleep(shared.config.timing.poll_interval) => {}
                    () = &mut stopped => {}
                }
            }
            Ok(jobs) => {
                backoff = Duration::from_millis(10);
                publish(&shared, jobs).await;
            }
            Err(error) => {
                queue::database_error("claim", &error.into());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Claims up to `in_flight` jobs: while maintenance says a suspect is due (a rescue marked
/// it: its relay died holding it), suspects first, then others for the rest. A message cannot
/// crash a relay, so a suspect needs no running alone; claimed only when nothing else waited,
/// it would never go out under steady traffic.
async fn claim_batch(shared: &RelayShared) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut conn = queue::acquire(&shared.config.pool).await?;
    let limit = shared.config.in_flight;
    let mut jobs = Vec::new();
    if shared.suspects_due.load(Ordering::SeqCst) {
        jobs = claim_some(shared, &mut conn, true, limit).await?;
        if jobs.len() < limit {
            shared.suspects_due.store(false, Ordering::SeqCst);
        }
    }
    if jobs.len() < limit {
        match claim_some(shared, &mut conn, false, limit - jobs.len()).await {
            Ok(more) => jobs.extend(more),
            Err(error) if jobs.is_empty() => return Err(error),
            // The suspects in hand go out; the others next time.
            Err(error) => queue::database_error("claim", &error.into()),
        }
    }
    Ok(jobs)
}

/// One claim statement: up to `limit` suspects, or other jobs, held in hand until their
/// outcome is recorded. A claim whose reply was lost is given back by maintenance.
async fn claim_some(
    shared: &RelayShared,
    conn: &mut queue::OwnedConn,
    suspects: bool,
    limit: usize,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let request = ClaimRequest {
        handlers: &shared.handlers,
        limit,
        suspects,
        worker: shared.worker,
        now: queue::fixed_now(&shared.config.timing.clock),
        token: queue::token(),
    };
    shared.in_flight.claiming(request.token);
    let jobs = queue::claim(conn.tx(), &request)
        .await
        .inspect_err(|error| {
            if queue::reply_lost(error) {
                shared.in_flight.lost(request.token);
            }
            shared.in_flight.claimed(request.token, &[]);
        })?;
    shared.in_flight.claimed(request.token, &jobs);
    Ok(jobs)
}

/// Publishes claimed jobs' messages in claim order, all before awaiting the acks, which are
/// awaited together; completes the acked jobs in one statement and records a failed attempt
/// for the others in another (retried after a backoff, so after later messages of their
/// subject). A write the database fails is written again until the relay's lease would lapse;
/// then the jobs are let go, and maintenance fails their rows as orphans.
async fn publish(shared: &RelayShared, jobs: Vec<Claimed>) {
    let js = &shared.config.js;
    let mut acks = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let Some(info) = shared.jobs.get(job.handler.as_str()) else {
            continue;
        };
        let subject = format!("{}{}", shared.config.prefix, info.queue());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id(job).as_str(),
        );
        let sent = js
            .publish_with_headers(subject, headers, job.payload.clone().into())
            .await;
        acks.push((job, sent));
    }
    // Every PubAck at once: a silent server costs the batch one ack timeout, not one each.
    let acked = futures_util::future::join_all(acks.into_iter().map(|(job, sent)| async move {
        let acked = match sent {
            Ok(ack) => ack.await.map(drop).map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        (job, acked)
    }))
    .await;
    let mut outcome = Outcome::default();
    for (job, acked) in acked {
        if let Some(info) = shared.jobs.get(job.handler.as_str()) {
            let subject = format!("{}{}", shared.config.prefix, info.queue());
            crate::meter::relayed(info.name(), &subject, acked.is_ok());
        }
        match acked {
            Ok(()) => outcome.done.push((job.id, job.token)),
            Err(error) => outcome.failed.push((
                job.id,
                job.token,
                queue::retry_delay(&shared.config.timing.retry, job.attempt),
                format!("publishing failed: {error}"),
            )),
        }
    }
    let recorder = Recorder {
        pool: &shared.config.pool,
        clock: &shared.config.timing.clock,
        dead_after_ms: shared.dead_after_ms(),
        deadline: Instant::now() + shared.config.timing.lease,
    };
    // Not recorded by the deadline: the jobs are let go, and maintenance fails their rows the
    // normal way (a published message is republished then, and dropped by the stream).
    recorder.record(&outcome).await;
    for job in &jobs {
        shared.in_flight.release(job.id);
    }
}
