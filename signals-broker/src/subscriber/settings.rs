//! A subscriber's settings: what its builder sets, and what its consume loop, its group
//! transactions and its inbox read.

use std::time::Duration;

use async_nats::jetstream;
use signals_queue::__broker::State;
use signals_queue::{Clock, Pool, RetryPolicy};

/// Everything a subscriber is configured with (see `SubscriberBuilder` for each setting).
pub(crate) struct Settings {
    pub(crate) pool: Pool,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) subject: String,
    pub(crate) state: State,
    pub(crate) max_deliver: i64,
    pub(crate) max_age: Duration,
    pub(crate) payload_grace: Duration,
    pub(crate) inbox_retention: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) batch: usize,
    pub(crate) clock: Clock,
    pub(crate) handler_timeout: Duration,
    /// The subjects of the stream `build` creates or updates, if it does.
    pub(crate) stream_subjects: Option<Vec<String>>,
}

impl Settings {
    /// The defaults, for the durable consumer `consumer` of `stream` on `subject`.
    pub(crate) fn new(
        pool: Pool,
        js: jetstream::Context,
        stream: String,
        consumer: String,
        subject: String,
    ) -> Settings {
        Settings {
            pool,
            js,
            stream,
            consumer,
            subject,
            state: State::given_by("SubscriberBuilder"),
            max_deliver: i64::MAX,
            max_age: Duration::from_secs(3600),
            payload_grace: signals_queue::lifecycle::DEFAULT_PAYLOAD_GRACE,
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            ack_wait: Duration::from_secs(30),
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
            },
            batch: 64,
            clock: Clock::system(),
            handler_timeout: Duration::from_secs(300),
            stream_subjects: None,
        }
    }

    /// The durable pull consumer this subscriber binds: explicit acks, its `ack_wait`, and no
    /// `MaxDeliver` (a redelivery JetStream counts may be the database's fault, so the
    /// subscriber decides when a message is dead).
    pub(crate) fn consumer_config(&self) -> jetstream::consumer::pull::Config {
        jetstream::consumer::pull::Config {
            durable_name: Some(self.consumer.clone()),
            filter_subject: self.subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            ..Default::default()
        }
    }
}
