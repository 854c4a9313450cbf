//! The broker rung of `signals`: a publishing function's messages relayed from the jobs table
//! to NATS JetStream, and JetStream messages consumed as signals in another service.
//!
//! `#[on(S, publish = "subject")]` (from `signals-queue`) writes the message as a job in the
//! caller's transaction: the outbox. This crate moves it on:
//!
//! - [`Relay`] claims the jobs `#[on(S, publish = "subject")]` wrote, publishes each message with
//!   a `Nats-Msg-Id` fixed per event and publishing function (the same on every retry, so the
//!   stream's duplicate window drops a republished message), many acks in flight, and marks a job
//!   done only after JetStream's PubAck.
//! - [`Subscriber`] binds a durable pull consumer on a subject to a signal type: for each message
//!   it records the message id in an inbox table, notifies the signal in that transaction with a
//!   context built by [`FromJobAsync`], commits, then acks. A message seen
//!   before is acked and skipped, so handlers' database effects happen once per message although
//!   JetStream delivers at least once.
//! - [`ensure_stream`] creates a stream with the defaults this needs when it is missing, and only
//!   adds missing subjects to one that exists; the builders'
//!   `create_stream` do it in their `build`, so that one call sets up the stream and the relay,
//!   or the stream and the consumer.
//!
//! The database is `signals-queue`'s: this crate's features `postgres` (default) and
//! `sqlx-sqlite` enable its drivers.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::{FutureExt as _, StreamExt as _};
use serde::de::DeserializeOwned;
use signals_core::AsyncSignal;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use signals_queue::__broker::{
    self as queue, linked_jobs, listen, maintain, ClaimRequest, Claimed, State, Upkeep,
};
use signals_queue::{Clock, FromJobAsync, JobInfo, Pool, RetryPolicy, Tx};

/// The error type, `signals_queue`'s: a database error, or [`Error::Nats`].
pub use signals_queue::Error;

/// How long a stream remembers message ids to drop duplicates (JetStream's default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the stream `name` over `subjects` when it is missing (file storage, a
/// [`DUPLICATE_WINDOW`] for the relay's message ids, everything else JetStream's defaults).
/// When it exists, changes nothing an operator may have set (replicas, `max_age`, limits, its
/// other subjects): it only adds the subjects of `subjects` it lacks, and says in the returned
/// [`StreamSetup`] what differs from what this crate would have created.
///
/// # Errors
///
/// [`Error::Nats`] if JetStream refuses (e.g. another stream already takes a subject).
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), signals_queue::Error> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await.map_err(signals_queue::Error::nats)?;
/// let js = async_nats::jetstream::new(client);
/// signals_broker::ensure_stream(&js, "SHOP", &["shop.>"]).await?;
/// # Ok(())
/// # }
/// ```
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[&str],
) -> Result<StreamSetup, Error> {
    let subjects: Vec<String> = subjects.iter().map(|s| (*s).to_owned()).collect();
    create_or_update_stream(js, name, &subjects).await
}

/// What [`ensure_stream`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSetup {
    /// The stream did not exist and was created.
    pub created: bool,
    /// Subjects the existing stream lacked, added to it.
    pub added_subjects: Vec<String>,
    /// How the existing stream differs from what this crate creates, left as it is (e.g. a
    /// shorter duplicate window, which lets a republished message through twice).
    pub differences: Vec<String>,
}

/// See [`ensure_stream`].
async fn create_or_update_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[String],
) -> Result<StreamSetup, Error> {
    let mut stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(error) if is_not_found(&error) => {
            js.create_stream(stream::Config {
                name: name.to_owned(),
                subjects: subjects.to_vec(),
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
            return Ok(StreamSetup {
                created: true,
                ..StreamSetup::default()
            });
        }
        Err(error) => return Err(Error::nats(error)),
    };
    let mut config = stream.info().await.map_err(Error::nats)?.config.clone();
    let mut setup = StreamSetup::default();
    if config.duplicate_window < DUPLICATE_WINDOW {
        setup.differences.push(format!(
            "its duplicate window is {:?}, shorter than the relay's {DUPLICATE_WINDOW:?}",
            config.duplicate_window
        ));
    }
    if config.storage != stream::StorageType::File {
        setup
            .differences
            .push("it keeps messages in memory, not in files".to_owned());
    }
    let missing: Vec<String> = subjects
        .iter()
        .filter(|subject| !config.subjects.contains(subject))
        .cloned()
        .collect();
    if !missing.is_empty() {
        config.subjects.extend(missing.iter().cloned());
        js.update_stream(config).await.map_err(Error::nats)?;
        setup.added_subjects = missing;
    }
    Ok(setup)
}

/// Whether JetStream said the stream does not exist.
fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    match error.kind() {
        jetstream::context::GetStreamErrorKind::JetStream(error) => {
            error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        }
        _ => false,
    }
}

/// The `Nats-Msg-Id` of a publishing function's message: its event and the function, the same
/// on every attempt.
fn message_id(job: &Claimed) -> String {
    format!("{}:{}", job.event_id, job.handler)
}

// ---------------------------------------------------------------------------------------------
// The relay.

/// Configures a [`Relay`]; every setting has a default.
#[must_use = "call `build().await` to get the relay"]
pub struct RelayBuilder {
    pool: Pool,
    js: jetstream::Context,
    in_flight: usize,
    lease: Duration,
    poll_interval: Duration,
    retry: RetryPolicy,
    /// Dead once a failing message is older than this; `None`: never.
    max_age: Option<Duration>,
    prefix: String,
    clock: Clock,
    /// The stream `build` creates or updates, and its subjects.
    stream: Option<(String, Vec<String>)>,
}

impl RelayBuilder {
    /// Creates the stream `name` over `subjects` in `build` if it is missing, or adds the
    /// subjects it lacks, as [`ensure_stream`] does (default: the stream is set up elsewhere). The subjects include
    /// the [prefix](Self::subject_prefix), if any: `&["staging.shop.>"]`.
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

    /// How long a claim holds its jobs (default 30 s): a relay that dies leaves them to another
    /// after this; the stream drops the messages it published twice.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often an idle relay looks for jobs when nothing woke it (default 100 ms). On
    /// PostgreSQL a committed job wakes it through LISTEN/NOTIFY; on SQLite a job written
    /// through sqlx in this process does.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The backoff after a failed publish (default: 1 s doubling, capped at 30 s, so that
    /// messages go out within 30 s of the broker's return after an outage of any length).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

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

    /// The clock for leases and retries.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Creates the jobs table if needed (and the stream, with
    /// [`create_stream`](Self::create_stream)) and gathers the publishing functions linked into
    /// this program: the relay claims only their jobs.
    ///
    /// # Errors
    ///
    /// A database error, two publishing functions with one job name, or [`Error::Nats`] if
    /// JetStream refuses the stream.
    pub async fn build(self) -> Result<Relay, Error> {
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
        queue::heartbeat(conn.tx(), worker, self.lease, queue::fixed_now(&self.clock)).await?;
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
                renewed: queue::LeaseClock::default(),
            }),
        })
    }
}

/// Publishes the messages of the publishing functions linked into this program from the jobs
/// table to JetStream; see the [module](self) documentation.
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
    /// When the relay's lease was last renewed.
    renewed: queue::LeaseClock,
}

impl RelayShared {
    fn upkeep(&self) -> Upkeep<'_> {
        Upkeep {
            pool: &self.config.pool,
            worker: self.worker,
            lease: self.config.lease,
            tick: (self.config.lease / 3).min(self.config.poll_interval * 5),
            retry: &self.config.retry,
            handlers: &self.handlers,
            clock: &self.config.clock,
            woken: &self.woken,
            suspects: None,
            in_flight: None,
            renewed: &self.renewed,
            retire: &self.retire,
            retired: &self.retired,
        }
    }
}

impl Relay {
    /// A relay from the jobs table in `pool` to JetStream through `client`.
    pub fn builder(pool: impl Into<Pool>, client: async_nats::Client) -> RelayBuilder {
        RelayBuilder {
            pool: pool.into(),
            js: jetstream::new(client),
            in_flight: 256,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(30),
            },
            max_age: None,
            prefix: String::new(),
            clock: Clock::system(),
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
            listen(&config.pool, woken, stop, stopped).await;
        });
        let shared = Arc::clone(&self.shared);
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
            if queue::busy(conn.tx(), &self.shared.handlers).await? == 0 {
                return Ok(());
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        // Jobs a rescue marked as suspects (their relay died holding them) are claimed too,
        // when no other is waiting: a message cannot crash a relay, so they need no running
        // alone, but the claim reads them through their own index.
        let claimed = async {
            let mut conn = queue::acquire(&shared.config.pool).await?;
            for suspects in [false, true] {
                let request = ClaimRequest {
                    handlers: &shared.handlers,
                    limit: shared.config.in_flight,
                    suspects,
                    worker: shared.worker,
                    now: queue::fixed_now(&shared.config.clock),
                    token: queue::token(),
                };
                let jobs = queue::claim(conn.tx(), &request)
                    .await
                    .inspect_err(|error| {
                        queue::unclaim_if_lost(&shared.config.pool, error, request.token)
                    })?;
                if !jobs.is_empty() {
                    return Ok::<_, sqlx::Error>(jobs);
                }
            }
            Ok(Vec::new())
        };
        match claimed.await {
            Ok(jobs) if jobs.is_empty() => {
                tokio::select! {
                    // Written in this process, maybe not committed yet: look again shortly.
                    () = &mut local => tokio::time::sleep(Duration::from_micros(500)).await,
                    // Committed (PostgreSQL notifies at commit).
                    () = &mut woken => {}
                    () = tokio::time::sleep(shared.config.poll_interval) => {}
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

/// Publishes claimed jobs' messages in claim order, all before awaiting the acks, which are
/// awaited together; completes the acked jobs in one statement and records a failed attempt
/// for the others (retried after a backoff, so after later messages of their subject).
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
    let mut done = Vec::with_capacity(jobs.len());
    let mut failed = Vec::new();
    for (job, acked) in acked {
        match acked {
            Ok(()) => done.push((job.id, job.token)),
            Err(error) => failed.push((job, error)),
        }
    }
    let now = queue::fixed_now(&shared.config.clock);
    let completed = async {
        let mut conn = queue::acquire(&shared.config.pool).await?;
        queue::complete_many(conn.tx(), &done, now).await
    };
    if let Err(error) = completed.await {
        // Published but not recorded: the lease brings them back, and the stream drops the
        // republished messages by their id.
        queue::database_error("complete", &error.into());
    }
    for (job, error) in failed {
        let message = format!("publishing failed: {error}");
        let failure = queue::Failure {
            permanent: false,
            delay_ms: queue::retry_delay(&shared.config.retry, job.attempt),
            error: &message,
            now,
            dead_after_ms: shared.config.max_age.map(|age| age.as_millis() as i64),
        };
        if let Ok(mut conn) = queue::acquire(&shared.config.pool).await {
            let _ = queue::fail(conn.tx(), job, &failure).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The subscriber.

/// Configures a [`Subscriber`]; every setting but the binding has a default.
#[must_use = "call `build().await` to get the subscriber"]
pub struct SubscriberBuilder<S> {
    pool: Pool,
    js: jetstream::Context,
    stream: String,
    consumer: String,
    subject: String,
    state: State,
    max_deliver: i64,
    max_age: Duration,
    payload_grace: Duration,
    inbox_retention: Duration,
    ack_wait: Duration,
    retry: RetryPolicy,
    batch: usize,
    clock: Clock,
    /// The subjects of the stream `build` creates or updates, if it does.
    stream_subjects: Option<Vec<String>>,
    signal: PhantomData<fn() -> S>,
}

impl<S> SubscriberBuilder<S> {
    /// Creates the stream over `subjects` in `build` if it is missing, or adds the subjects it
    /// lacks, as [`ensure_stream`] does, before the consumer (default: the stream must exist). With it,
    /// `build` sets up both in one call.
    pub fn create_stream(mut self, subjects: &[&str]) -> Self {
        self.stream_subjects = Some(subjects.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Hands the subscriber a value that contexts reach with
    /// [`AsyncJobScope::state`](signals_queue::AsyncJobScope::state); one per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// How many deliveries a message whose handlers fail gets before it is terminated and
    /// recorded dead (default: no limit; [`max_age`](Self::max_age) decides). Deliveries that
    /// a database outage or a crashed subscriber cost count too, so prefer the age.
    pub fn max_deliver(mut self, deliveries: i64) -> Self {
        self.max_deliver = deliveries.max(1);
        self
    }

    /// How long after it was published a message whose handlers keep failing is retried before
    /// it is terminated and recorded dead (default 1 hour). Only handler failures lead there:
    /// while the database itself fails (it cannot begin, record or commit), the subscriber
    /// holds the messages in hand, tells JetStream it is still working on them, and tries
    /// again; no delivery is used up.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// How long after it was published a message that does not deserialize into the signal is
    /// delivered again before it is dead (default 30 minutes): during a rolling deploy the
    /// producer may send a shape only the next release of this consumer reads.
    pub fn payload_grace(mut self, grace: Duration) -> Self {
        self.payload_grace = grace;
        self
    }

    /// How long the inbox remembers a message (default 7 days): rows older than this are
    /// pruned. Keep it longer than any redelivery can come late: longer than the stream's
    /// `duplicate_window` and than the publishing side's longest outage (a relay republishing
    /// after a database outage, a revived publish job); see `docs/production.md`.
    pub fn inbox_retention(mut self, retention: Duration) -> Self {
        self.inbox_retention = retention;
        self
    }

    /// How long JetStream waits for an ack before it delivers again (default 30 s).
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// The delay before a failed message is delivered again (default: 1 s doubling, capped at
    /// 1 minute).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many messages one pull asks for (default 64). They are handled one after another,
    /// in stream order; up to 16 of those that have arrived together share a transaction (each
    /// after a savepoint, so a failing one rolls back alone; 16 keeps a transaction's
    /// subtransactions, handlers' own savepoints included, under PostgreSQL's 64 cached per
    /// backend) and one commit, and are acked after it.
    pub fn batch(mut self, messages: usize) -> Self {
        self.batch = messages.max(1);
        self
    }

    /// The clock for the inbox's times.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl<S> SubscriberBuilder<S>
where
    S: AsyncSignal + DeserializeOwned + Send + Sync,
    for<'c> S::Context<'c>: FromJobAsync<'c> + Send,
{
    /// Creates the inbox table if needed (and the stream, with
    /// [`create_stream`](Self::create_stream)), and the durable consumer (or updates it):
    /// explicit acks, [`ack_wait`](Self::ack_wait), [`max_deliver`](Self::max_deliver).
    ///
    /// # Errors
    ///
    /// A database error, or [`Error::Nats`] if the stream does not exist or JetStream refuses
    /// the stream or the consumer.
    pub async fn build(self) -> Result<Subscriber<S>, Error> {
        queue::check_schema(&self.pool).await?;
        queue::check_session(&self.pool).await?;
        if let Some(subjects) = &self.stream_subjects {
            create_or_update_stream(&self.js, &self.stream, subjects).await?;
        }
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(Error::nats)?;
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(self.consumer.clone()),
                filter_subject: self.subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                // Unlimited: a redelivery JetStream counts may be the database's fault, so
                // the subscriber decides when a message is dead.
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
        // Messages without a `Nats-Msg-Id` are keyed by stream sequence and the stream's
        // creation time: a re-created stream restarts its sequence, not its keys.
        let created = stream.cached_info().created.unix_timestamp_nanos();
        let subscription = Subscription {
            signal: signals_core::catalog().get::<S>().path(),
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            subject: self.subject.clone(),
        };
        let mut subscriptions = SUBSCRIPTIONS.lock().unwrap_or_else(|e| e.into_inner());
        if !subscriptions.contains(&subscription) {
            subscriptions.push(subscription);
        }
        drop(subscriptions);
        let stream_key = format!("{}@{created}", self.stream);
        Ok(Subscriber {
            config: self,
            consumer,
            stream_key,
            stop: Arc::new(AtomicBool::new(false)),
            pruned: None,
            checked: None,
        })
    }
}

/// Consumes a JetStream subject as the signal `S`: see the [module](self) documentation.
///
/// # Examples
///
/// ```no_run
/// # use signals_core::Signal;
/// # pub struct ShipCtx<'a> { pub tx: signals_queue::Tx<'a> }
/// # impl<'c> signals_queue::FromJobAsync<'c> for ShipCtx<'c> {
/// #     fn from_job(job: signals_queue::AsyncJobScope<'c>) -> Result<Self, signals_core::BoxError> {
/// #         Ok(ShipCtx { tx: job.transaction() })
/// #     }
/// # }
/// #[derive(Signal, serde::Deserialize)]
/// #[signal(context = ShipCtx<'_>, asynchronous)]
/// struct OrderCreatedMessage {
///     order_id: i64,
/// }
///
/// # async fn run(pool: signals_queue::Pool, client: async_nats::Client) -> Result<(), signals_queue::Error> {
/// use signals_broker::Subscriber;
///
/// let subscriber = Subscriber::<OrderCreatedMessage>::builder(
///     pool, client, "SHOP", "shipping", "shop.orders.created",
/// )
/// .create_stream(&["shop.>"])
/// .build()
/// .await?;
/// subscriber.run_until_idle().await?;
/// # Ok(())
/// # }
/// ```
pub struct Subscriber<S> {
    config: SubscriberBuilder<S>,
    consumer: consumer::PullConsumer,
    /// The stream's name and creation time, for keys of messages without a `Nats-Msg-Id`.
    stream_key: String,
    stop: Arc<AtomicBool>,
    /// When the inbox was last pruned.
    pruned: Option<std::time::Instant>,
    /// When an idle subscriber last checked that its consumer exists.
    checked: Option<std::time::Instant>,
}

/// How many messages share a transaction at most: one savepoint each, and room for handlers'
/// own, under PostgreSQL's 64 cached subtransactions per backend.
const GROUP: usize = 16;

/// How often an idle subscriber checks that its consumer still exists.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How often a subscriber prunes its inbox.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl<S> Subscriber<S>
where
    S: AsyncSignal + DeserializeOwned + Send + Sync,
    for<'c> S::Context<'c>: FromJobAsync<'c> + Send,
{
    /// A subscriber of the durable consumer `consumer` of `stream`, on `subject`, into
    /// `pool`'s database.
    pub fn builder(
        pool: impl Into<Pool>,
        client: async_nats::Client,
        stream: impl Into<String>,
        consumer: impl Into<String>,
        subject: impl Into<String>,
    ) -> SubscriberBuilder<S> {
        SubscriberBuilder {
            pool: pool.into(),
            js: jetstream::new(client),
            stream: stream.into(),
            consumer: consumer.into(),
            subject: subject.into(),
            state: State::default(),
            max_deliver: i64::MAX,
            max_age: Duration::from_secs(3600),
            payload_grace: lifecycle_payload_grace(),
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            ack_wait: Duration::from_secs(30),
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
            },
            batch: 64,
            clock: Clock::system(),
            stream_subjects: None,
            signal: PhantomData,
        }
    }

    /// A flag that stops [`run`](Self::run) after the message in hand when set.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Handles messages until the stopper is set. A NATS error (a reconnect, a deleted
    /// consumer) is logged and retried with a backoff: the consumer is bound again after a
    /// few failed pulls. Prunes the inbox every 10 minutes.
    ///
    /// # Errors
    ///
    /// None today: the loop ends only when the stopper is set.
    pub async fn run(mut self) -> Result<(), Error> {
        while !self.stop.load(Ordering::SeqCst) {
            self.pull_or_recover(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Handles messages until the consumer has none pending or unacknowledged (for tests,
    /// demos and batch jobs; a message that keeps failing keeps it running within its budget).
    ///
    /// # Errors
    ///
    /// [`Error::Nats`] if a pull fails or the consumer's state cannot be read: unlike
    /// [`run`](Self::run), it does not wait for NATS to come back.
    pub async fn run_until_idle(mut self) -> Result<(), Error> {
        loop {
            self.prune().await;
            let handled = self.pull(Duration::from_millis(100)).await?;
            if handled == 0 {
                let info = self.consumer.info().await.map_err(Error::nats)?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return Ok(());
                }
            }
        }
    }

    /// One pull; on an error, a pause and (after three in a row) the consumer bound again.
    async fn pull_or_recover(&mut self, wait: Duration) -> usize {
        self.prune().await;
        let mut failures = 0u32;
        loop {
            match self.pull(wait).await {
                Ok(0) => {
                    // A pull from a deleted consumer just finds nothing: look at it now and
                    // then while idle, and bind it again if it is gone.
                    if self.checked.is_none_or(|at| at.elapsed() >= CHECK_EVERY) {
                        self.checked = Some(std::time::Instant::now());
                        if self.consumer.info().await.is_err() {
                            if let Err(error) = self.bind().await {
                                queue::database_error("nats", &error);
                            }
                        }
                    }
                    return 0;
                }
                Ok(handled) => return handled,
                Err(error) => {
                    failures += 1;
                    queue::database_error("nats", &error);
                    if self.stop.load(Ordering::SeqCst) {
                        return 0;
                    }
                    tokio::time::sleep(Duration::from_millis(200 << failures.min(5))).await;
                    if failures.is_multiple_of(3) {
                        if let Err(error) = self.bind().await {
                            queue::database_error("nats", &error);
                        }
                    }
                }
            }
        }
    }

    /// Binds the durable consumer again (JetStream may have lost it, or an operator deleted it).
    async fn bind(&mut self) -> Result<(), Error> {
        let config = &self.config;
        let stream = config
            .js
            .get_stream(&config.stream)
            .await
            .map_err(Error::nats)?;
        self.consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(config.consumer.clone()),
                filter_subject: config.subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
        // The stream may have been re-created: its sequence restarted, so its key changes.
        let created = stream.cached_info().created.unix_timestamp_nanos();
        self.stream_key = format!("{}@{created}", config.stream);
        Ok(())
    }

    /// Forgets inbox rows older than the retention, every [`PRUNE_EVERY`].
    async fn prune(&mut self) {
        if self.pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.pruned = Some(std::time::Instant::now());
        let before = self.config.clock.now() - self.config.inbox_retention.as_millis() as i64;
        let pruned = match queue::acquire(&self.config.pool).await {
            Ok(mut conn) => queue::inbox_prune(conn.tx(), &self.config.consumer, before).await,
            Err(error) => Err(error),
        };
        if let Err(error) = pruned {
            queue::database_error("inbox prune", &error.into());
        }
    }

    /// One pull: up to `batch` messages, handled in order, in groups of those that have
    /// arrived together (at most [`GROUP`]); how many.
    async fn pull(&mut self, wait: Duration) -> Result<usize, Error> {
        let mut messages = self
            .consumer
            .fetch()
            .max_messages(self.config.batch)
            .expires(wait)
            .messages()
            .await
            .map_err(Error::nats)?;
        let mut handled = 0;
        while let Some(first) = messages.next().await {
            let mut arrived = vec![first.map_err(Error::Nats)?];
            // The messages already here join; none is waited for.
            while let Some(Some(next)) = messages.next().now_or_never() {
                arrived.push(next.map_err(Error::Nats)?);
            }
            handled += arrived.len();
            let mut start = 0;
            while start < arrived.len() {
                let end = (start + GROUP).min(arrived.len());
                // The messages after the group wait in hand: they get in-progress acks too.
                self.handle(&arrived[start..end], &arrived[end..]).await;
                start = end;
            }
        }
        Ok(handled)
    }

    /// A group of messages in one transaction, each after a savepoint: its inbox row and its
    /// handlers' effects, or (rolled back to its savepoint) a dead row or nothing; one commit;
    /// then each is acked, naked with backoff, or terminated. While the group runs, JetStream
    /// is told every third of `ack_wait` that it and the messages `waiting` behind it are in
    /// progress (a long handler is not delivered to another instance). When the database fails
    /// (begin, a statement of the subscriber's own, the connection) the group is held and
    /// tried again after a pause, with the same in-progress acks: an outage uses up no
    /// delivery. A commit the database refuses for what a handler wrote (a deferred
    /// constraint, a serialization failure) is that message's failure: the group is tried
    /// again one message at a time, and the one whose commit fails is naked or dead.
    async fn handle(&self, group: &[jetstream::Message], waiting: &[jetstream::Message]) {
        if self.until_done(group, &[], waiting).await {
            return;
        }
        for (i, message) in group.iter().enumerate() {
            let _ = self
                .until_done(std::slice::from_ref(message), &group[i + 1..], waiting)
                .await;
        }
    }

    /// Applies `group` until it commits (then acks it: `true`), the subscriber stops, or the
    /// commit is refused for what the group wrote (`false` for a group of several; a single
    /// message is then naked or dead, and `true`).
    async fn until_done(
        &self,
        group: &[jetstream::Message],
        later: &[jetstream::Message],
        waiting: &[jetstream::Message],
    ) -> bool {
        let mut pause = Duration::from_millis(100);
        let keep_alive = (self.config.ack_wait / 3).max(Duration::from_millis(100));
        let held = [group, later, waiting];
        loop {
            let attempt = self.apply_group(group);
            tokio::pin!(attempt);
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
            let result = loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    _ = ticker.tick() => in_progress(&held).await,
                }
            };
            let error = match result {
                Ok(acks) => {
                    // A lost ack means one more delivery, which the inbox skips.
                    for (message, ack) in group.iter().zip(acks) {
                        let _ = message.ack_with(ack).await;
                    }
                    return true;
                }
                Err(GroupError::Refused(error)) if group.len() > 1 => {
                    queue::database_error("commit", &error.into());
                    return false;
                }
                Err(GroupError::Refused(error)) => match self.refused(&group[0], &error).await {
                    Ok(ack) => {
                        let _ = group[0].ack_with(ack).await;
                        return true;
                    }
                    Err(error) => error,
                },
                Err(GroupError::Database(error)) => error,
            };
            queue::database_error("inbox", &error.into());
            if self.stop.load(Ordering::SeqCst) {
                return true; // delivered again after `ack_wait`
            }
            in_progress(&held).await;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(keep_alive).min(Duration::from_secs(5));
        }
    }

    /// The group in one transaction: how to acknowledge each message once it committed.
    async fn apply_group(&self, group: &[jetstream::Message]) -> Result<Vec<AckKind>, GroupError> {
        let mut tx = self.config.pool.begin().await?;
        let mut acks = Vec::with_capacity(group.len());
        for message in group {
            acks.push(self.apply(&mut tx, message).await?);
        }
        tx.commit().await.map_err(|error| match error {
            error @ sqlx::Error::Database(_) => GroupError::Refused(error),
            error => GroupError::Database(error),
        })?;
        Ok(acks)
    }

    /// One message whose commit the database refused: a failed delivery (naked after a
    /// backoff), or dead once past its budget (recorded in a transaction of its own).
    async fn refused(
        &self,
        message: &jetstream::Message,
        error: &sqlx::Error,
    ) -> Result<AckKind, sqlx::Error> {
        let received = self.received(message);
        let failure = Failure::Retry(format!("the database refused the commit: {error}"));
        let (error, dead) = self.verdict(&received, failure);
        if !dead {
            return Ok(self.nak(&received));
        }
        let mut tx = self.config.pool.begin().await?;
        let (consumer, subject) = (&self.config.consumer, message.subject.as_str());
        inbox(
            tx.tx(),
            consumer,
            &received.id,
            subject,
            Some(&error),
            received.now,
        )
        .await?;
        tx.commit().await?;
        Ok(AckKind::Term)
    }

    /// What a message says of itself: its inbox key, deliveries, sequence, publication time.
    fn received(&self, message: &jetstream::Message) -> Received {
        let now = self.config.clock.now();
        let (delivered, sequence, published) = match message.info() {
            Ok(info) => (
                info.delivered,
                info.stream_sequence,
                (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            ),
            Err(_) => (1, 0, now),
        };
        let id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map_or_else(
                || format!("{}:{sequence}", self.stream_key),
                |id| id.to_string(),
            );
        Received {
            id,
            delivered,
            sequence,
            published,
            now,
        }
    }

    /// A failed message's error, and whether it is dead: past `payload_grace` for a payload
    /// this release cannot read, past `max_age` for a handler failure, or `max_deliver`.
    fn verdict(&self, received: &Received, failure: Failure) -> (String, bool) {
        let age = received.now.saturating_sub(received.published);
        let out_of_deliveries = received.delivered >= self.config.max_deliver;
        match failure {
            Failure::Payload(error) => {
                let grace = self.config.payload_grace.as_millis() as i64;
                (error, out_of_deliveries || age >= grace)
            }
            Failure::Retry(error) => {
                let budget = self.config.max_age.as_millis() as i64;
                (error, out_of_deliveries || age >= budget)
            }
        }
    }

    /// A nak with the retry policy's backoff.
    fn nak(&self, received: &Received) -> AckKind {
        let attempt = received.delivered.max(1) as u32;
        AckKind::Nak(Some(self.config.retry.delay(attempt, fastrand::f64())))
    }

    /// One message of a group, after a savepoint: how to acknowledge it once the group commits.
    /// `Err`: the transaction itself failed.
    async fn apply(
        &self,
        tx: &mut signals_queue::Transaction,
        message: &jetstream::Message,
    ) -> Result<AckKind, sqlx::Error> {
        let received = self.received(message);
        let subject = message.subject.as_str();
        let consumer = &self.config.consumer;
        queue::savepoint(tx.tx(), "SAVEPOINT signals_message").await?;
        if !inbox(tx.tx(), consumer, &received.id, subject, None, received.now).await? {
            return Ok(AckKind::Ack); // seen before: its effects committed then
        }
        let notified = self
            .notify(
                tx,
                message,
                &received.id,
                received.delivered,
                received.sequence,
            )
            .await;
        let failure = match notified {
            Ok(()) => match queue::savepoint(tx.tx(), "RELEASE SAVEPOINT signals_message").await {
                Ok(()) => return Ok(AckKind::Ack),
                // The handler returned `Ok` but left its transaction failed (it caught a
                // database error): its failure, not the database's.
                Err(sqlx::Error::Database(error)) => Failure::Retry(format!(
                    "the handler returned Ok but its transaction failed: {error}"
                )),
                Err(error) => return Err(error),
            },
            Err(failure) => failure,
        };
        queue::savepoint(tx.tx(), "ROLLBACK TO SAVEPOINT signals_message").await?;
        let (error, dead) = self.verdict(&received, failure);
        if !dead {
            return Ok(self.nak(&received));
        }
        inbox(
            tx.tx(),
            consumer,
            &received.id,
            subject,
            Some(&error),
            received.now,
        )
        .await?;
        Ok(AckKind::Term)
    }

    /// The message as the signal, notified in `tx`.
    async fn notify(
        &self,
        tx: &mut signals_queue::Transaction,
        message: &jetstream::Message,
        message_id: &str,
        delivered: i64,
        sequence: u64,
    ) -> Result<(), Failure> {
        let signal: S = serde_json::from_slice(&message.payload).map_err(|error| {
            Failure::Payload(format!(
                "the message does not deserialize into the signal: {error}"
            ))
        })?;
        let event_id = message_id
            .split(':')
            .next()
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_default();
        let scope = queue::scope(
            tx.tx(),
            &self.config.state,
            sequence as i64,
            event_id,
            delivered.max(0) as u32,
        );
        let notified = AssertUnwindSafe(async {
            let mut ctx = <S::Context<'_> as FromJobAsync<'_>>::from_job(scope)
                .map_err(|error| error.to_string())?;
            signals_core::notify_async(&signal, &mut ctx)
                .await
                .map_err(|error| error_chain(&error))
        })
        .catch_unwind()
        .await;
        match notified {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Failure::Retry(error)),
            Err(panic) => Err(Failure::Retry(queue::panic_message(&*panic))),
        }
    }
}

/// Tells JetStream the subscriber is still working on these messages (resets their
/// `ack_wait`; uses up no delivery).
async fn in_progress(held: &[&[jetstream::Message]]) {
    for group in held {
        for message in group.iter() {
            let _ = message.ack_with(AckKind::Progress).await;
        }
    }
}

/// Why a group did not commit.
enum GroupError {
    /// The database failed: the connection, `BEGIN`, or a statement of the subscriber's own.
    Database(sqlx::Error),
    /// The database refused the commit for what the group wrote.
    Refused(sqlx::Error),
}

impl From<sqlx::Error> for GroupError {
    fn from(error: sqlx::Error) -> Self {
        GroupError::Database(error)
    }
}

/// What a message says of itself (see `Subscriber::received`).
struct Received {
    /// Its inbox key: its `Nats-Msg-Id`, or the stream's key and its sequence.
    id: String,
    delivered: i64,
    sequence: u64,
    /// When the stream stored it, in milliseconds.
    published: i64,
    now: i64,
}

/// The payload grace of `signals-queue`'s workers, for the subscriber's default.
fn lifecycle_payload_grace() -> Duration {
    signals_queue::lifecycle::DEFAULT_PAYLOAD_GRACE
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A subject bound to a signal by a [`Subscriber`] built in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The signal's full path.
    pub signal: &'static str,
    /// The stream.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// The subject.
    pub subject: String,
}

impl std::fmt::Display for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} <- {} (stream {}, consumer {})",
            self.signal, self.subject, self.stream, self.consumer
        )
    }
}

static SUBSCRIPTIONS: std::sync::Mutex<Vec<Subscription>> = std::sync::Mutex::new(Vec::new());

/// The subscriptions this process has made, in the order they were built: the consuming half of
/// the catalog (publishing functions are in [`signals_core::catalog`], with their subject).
/// Subscriptions are made at run time, so they are known only once built.
pub fn subscriptions() -> Vec<Subscription> {
    SUBSCRIPTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Why a message's effects rolled back.
enum Failure {
    /// It does not deserialize: only another release of this consumer can help, within
    /// `payload_grace`.
    Payload(String),
    /// A handler or the database failed: deliver it again after a backoff.
    Retry(String),
}

/// Records a message in the inbox (`dead` with its error if `error` is given); whether it was
/// new.
async fn inbox(
    tx: Tx<'_>,
    consumer: &str,
    message_id: &str,
    subject: &str,
    error: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let state = if error.is_some() { "dead" } else { "done" };
    let row = queue::InboxRow {
        consumer,
        message_id,
        subject,
        state,
        error,
        now,
    };
    queue::inbox_insert(tx, &row).await
}

/// Counts of one consumer's inbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Messages whose effects committed (each once).
    pub done: u64,
    /// Messages terminated after their last delivery, or that could not be read.
    pub dead: u64,
}

/// The inbox counts of `consumer` in `pool`'s database.
///
/// # Errors
///
/// A database error.
pub async fn inbox_stats(pool: &Pool, consumer: &str) -> Result<InboxStats, Error> {
    let mut conn = queue::acquire(pool).await?;
    let mut stats = InboxStats::default();
    for (state, count) in queue::inbox_counts(conn.tx(), consumer).await? {
        match state.as_str() {
            "done" => stats.done = count as u64,
            "dead" => stats.dead = count as u64,
            _ => {}
        }
    }
    Ok(stats)
}
