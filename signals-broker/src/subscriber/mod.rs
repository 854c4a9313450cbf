//! The subscriber: a durable pull consumer on a subject bound to a signal type. Its builder, and
//! its consume loop (pull, hand groups of messages to [`group`], recover from NATS errors).
//! Each message's effects and its inbox row commit together; see [`inbox`].

mod budget;
mod group;
mod inbox;
mod settings;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::{FutureExt as _, StreamExt as _};
use serde::de::DeserializeOwned;
use signals_core::AsyncSignal;

use signals_queue::__broker as queue;
use signals_queue::{Clock, Error, FromJobAsync, Pool, RetryPolicy};

use crate::catalog::{self, Subscription};
use crate::stream::create_or_update_stream;
use budget::FirstTries;
use group::Groups;
use settings::Settings;

/// Configures a [`Subscriber`]; every setting but the binding has a default.
#[must_use = "call `build().await` to get the subscriber"]
pub struct SubscriberBuilder<S> {
    settings: Settings,
    signal: PhantomData<fn() -> S>,
}

impl<S> SubscriberBuilder<S> {
    /// Creates the stream over `subjects` in `build` if it is missing, or adds the subjects it
    /// lacks, as [`ensure_stream`](crate::stream::ensure_stream) does, before the consumer
    /// (default: the stream must exist). With it, `build` sets up both in one call.
    pub fn create_stream(mut self, subjects: &[&str]) -> Self {
        self.settings.stream_subjects = Some(subjects.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Hands the subscriber a value that contexts reach with
    /// [`AsyncJobScope::state`](signals_queue::AsyncJobScope::state); one per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.settings.state.insert(value);
        self
    }

    /// How many deliveries a message whose handlers fail gets before it is terminated and
    /// recorded dead (default: no limit; [`max_age`](Self::max_age) decides). Deliveries that
    /// a database outage or a crashed subscriber cost count too, so prefer the age.
    pub fn max_deliver(mut self, deliveries: i64) -> Self {
        self.settings.max_deliver = deliveries.max(1);
        self
    }

    /// How long a message whose handlers keep failing is retried before it is terminated and
    /// recorded dead (default 1 hour), counted from when this subscriber first tried it, not
    /// from when it was published: after an outage longer than this, the backlog's messages
    /// still get their retries. The first tries are kept in memory: a restarted subscriber
    /// counts again, and instances sharing the consumer count apart (a message gets more
    /// tries, never fewer). Only handler failures lead there: while the database itself fails
    /// (it cannot begin, record or commit, or the connection is lost), the subscriber holds the
    /// messages in hand, tells JetStream it is still working on them, and tries again; no
    /// delivery is used up. A serialization failure or a deadlock (in a handler's statement or
    /// at the commit), or a lost connection in a handler's statement, is tried again the same
    /// way, up to 10 times in a row before it counts as the message's failure.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.settings.max_age = age;
        self
    }

    /// How long a message that does not deserialize into the signal is delivered again before
    /// it is dead (default 30 minutes), counted from when this subscriber first tried it, as
    /// [`max_age`](Self::max_age) is: during a rolling deploy the producer may send a shape only
    /// the next release of this consumer reads.
    pub fn payload_grace(mut self, grace: Duration) -> Self {
        self.settings.payload_grace = grace;
        self
    }

    /// How long the inbox remembers a message (default 7 days): rows older than this are
    /// pruned. Keep it longer than any redelivery can come late: longer than the stream's
    /// `duplicate_window` and than the publishing side's longest outage (a relay republishing
    /// after a database outage, a revived publish job); see `docs/production.md`.
    pub fn inbox_retention(mut self, retention: Duration) -> Self {
        self.settings.inbox_retention = retention;
        self
    }

    /// How long JetStream waits for an ack before it delivers again (default 30 s).
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.settings.ack_wait = wait;
        self
    }

    /// The delay before a failed message is delivered again (default: 1 s doubling, capped at
    /// 1 minute).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// How many messages one pull asks for (default 64). They are handled one after another,
    /// in stream order; up to 16 of those that have arrived together share a transaction (each
    /// after a savepoint, so a failing one rolls back alone; 16 keeps a transaction's
    /// subtransactions, handlers' own savepoints included, under PostgreSQL's 64 cached per
    /// backend) and one commit, and are acked after it.
    pub fn batch(mut self, messages: usize) -> Self {
        self.settings.batch = messages.max(1);
        self
    }

    /// How long a message's handlers may run (default 5 minutes). Past it they are cancelled
    /// (their future is dropped and the message's savepoint rolled back) and the delivery
    /// counts as a failure of that message: naked with a backoff, or dead past its budget. The
    /// group's other messages commit without it; in-progress acks stop holding it.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handler_timeout = timeout;
        self
    }

    /// The clock for the inbox's times.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.settings.clock = clock;
        self
    }
}

impl<S> SubscriberBuilder<S>
where
    S: AsyncSignal + DeserializeOwned + Send + Sync,
    for<'c> S::Context<'c>: FromJobAsync<'c> + Send,
{
    /// Checks, reading only, that the schema (the inbox table included) is one this release
    /// works with (it never creates or migrates it: run the migration first, e.g.
    /// `AsyncQueue::migrate`), refuses a pool behind a transaction-mode pooler, creates or
    /// updates the stream with [`create_stream`](Self::create_stream), then creates the
    /// durable consumer (or updates it): explicit acks, [`ack_wait`](Self::ack_wait), no
    /// JetStream `MaxDeliver` (the subscriber applies [`max_deliver`](Self::max_deliver)
    /// itself).
    ///
    /// # Errors
    ///
    /// A database error, [`Error::SchemaOutdated`] (no table, or an older one: migrate
    /// first), [`Error::SchemaTooNew`], [`Error::TransactionPooler`], or [`Error::Nats`] if
    /// the stream does not exist or JetStream refuses the stream or the consumer.
    pub async fn build(self) -> Result<Subscriber<S>, Error> {
        let settings = self.settings;
        let longest_budget = settings.max_age.max(settings.payload_grace);
        queue::check_schema(&settings.pool).await?;
        queue::check_session(&settings.pool).await?;
        if let Some(subjects) = &settings.stream_subjects {
            create_or_update_stream(&settings.js, &settings.stream, subjects).await?;
        }
        let (consumer, stream_key) = bind(&settings).await?;
        catalog::register(Subscription {
            signal: signals_core::catalog().get::<S>().path(),
            stream: settings.stream.clone(),
            consumer: settings.consumer.clone(),
            subject: settings.subject.clone(),
        });
        Ok(Subscriber {
            settings,
            consumer,
            stream_key,
            stop: Arc::new(AtomicBool::new(false)),
            pruned: None,
            checked: None,
            first_tries: FirstTries::new(longest_budget),
            signal: PhantomData,
        })
    }
}

/// Creates (or updates) the durable consumer; with the stream's key: its name and creation
/// time. Messages without a `Nats-Msg-Id` are keyed by that and their sequence: a re-created
/// stream restarts its sequence, not its keys.
async fn bind(settings: &Settings) -> Result<(consumer::PullConsumer, String), Error> {
    let stream = settings
        .js
        .get_stream(&settings.stream)
        .await
        .map_err(Error::nats)?;
    let consumer = stream
        .create_consumer(settings.consumer_config())
        .await
        .map_err(Error::nats)?;
    let created = stream.cached_info().created.unix_timestamp_nanos();
    Ok((consumer, format!("{}@{created}", settings.stream)))
}

/// Consumes a JetStream subject as the signal `S`: see the [crate documentation](crate).
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
    settings: Settings,
    consumer: consumer::PullConsumer,
    /// The stream's name and creation time, for keys of messages without a `Nats-Msg-Id`.
    stream_key: String,
    stop: Arc<AtomicBool>,
    /// When the inbox was last pruned.
    pruned: Option<std::time::Instant>,
    /// When an idle subscriber last checked that its consumer exists.
    checked: Option<std::time::Instant>,
    /// When this subscriber first tried the messages that failed (their age budget).
    first_tries: FirstTries,
    signal: PhantomData<fn() -> S>,
}

/// How many messages share a transaction at most: one savepoint each, and room for handlers'
/// own, under PostgreSQL's 64 cached subtransactions per backend.
const GROUP: usize = 16;

/// How often an idle subscriber checks that its consumer still exists.
const CHECK_EVERY: Duration = Duration::from_secs(2);

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
            settings: Settings::new(
                pool.into(),
                jetstream::new(client),
                stream.into(),
                consumer.into(),
                subject.into(),
            ),
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
        // The stream may have been re-created: its sequence restarted, so its key changes.
        (self.consumer, self.stream_key) = bind(&self.settings).await?;
        Ok(())
    }

    /// Forgets inbox rows older than the retention, every 10 minutes.
    async fn prune(&mut self) {
        inbox::prune(&self.settings, &mut self.pruned).await;
    }

    /// One pull: up to `batch` messages, handled in order, in groups of those that have
    /// arrived together (at most [`GROUP`]); how many.
    async fn pull(&mut self, wait: Duration) -> Result<usize, Error> {
        let mut messages = self
            .consumer
            .fetch()
            .max_messages(self.settings.batch)
            .expires(wait)
            .messages()
            .await
            .map_err(Error::nats)?;
        let groups = Groups::<S>::new(
            &self.settings,
            &self.stream_key,
            &self.stop,
            &self.first_tries,
        );
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
                groups.handle(&arrived[start..end], &arrived[end..]).await;
                start = end;
            }
        }
        Ok(handled)
    }
}
