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
//!   context built by [`FromJobAsync`](signals_queue::FromJobAsync), commits, then acks. A
//!   message seen before is acked and skipped, so handlers' database effects happen once per
//!   message although JetStream delivers at least once.
//! - [`ensure_stream`] creates a stream with the defaults this needs when it is missing, and only
//!   adds missing subjects to one that exists; the builders'
//!   `create_stream` do it in their `build`, so that one call sets up the stream and the relay,
//!   or the stream and the consumer.
//!
//! The database is `signals-queue`'s: this crate's features `postgres` (default) and
//! `sqlx-sqlite` enable its drivers.

mod catalog;
mod meter;
mod relay;
mod stats;
mod stream;
mod subscriber;

pub use catalog::{subscriptions, Subscription};
pub use relay::{Relay, RelayBuilder, RunningRelay};
pub use stats::{inbox_stats, InboxStats};
pub use stream::{ensure_stream, StreamSetup, DUPLICATE_WINDOW};
pub use subscriber::{Subscriber, SubscriberBuilder};

/// The error type, `signals_queue`'s: a database error, or [`Error::Nats`].
pub use signals_queue::Error;

/// The async-nats this crate is built against (0.51): its `Client` and `jetstream::Context` are
/// the ones [`Relay`] and [`Subscriber`] take.
pub use async_nats;

/// The sqlx of `signals-queue` (0.9), whose pools and transactions the broker's rows go through.
pub use signals_queue::sqlx;
