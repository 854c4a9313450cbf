//! A group of messages in one transaction: each message after a savepoint (its inbox row and
//! its handlers' effects), one commit, then an ack, a nak with backoff or a termination for
//! each; in-progress acks while the group runs; and the verdict on a failed message (retried or
//! dead).

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::FutureExt as _;
use serde::de::DeserializeOwned;
use signals_core::AsyncSignal;
use uuid::Uuid;

use signals_queue::__broker as queue;
use signals_queue::FromJobAsync;

use crate::meter::{self, Settled};
use crate::subscriber::budget::FirstTries;
use crate::subscriber::inbox;
use crate::subscriber::settings::Settings;

/// Applies groups of messages as the signal `S`, for one subscriber.
pub(crate) struct Groups<'a, S> {
    settings: &'a Settings,
    /// The stream's name and creation time, for keys of messages without a `Nats-Msg-Id`.
    stream_key: &'a str,
    /// Set when the subscriber stops: a group the database refuses is then left to redelivery.
    stop: &'a AtomicBool,
    /// When this subscriber first tried the messages that failed: their age budget's start.
    first_tries: &'a FirstTries,
    signal: PhantomData<fn() -> S>,
}

impl<'a, S> Groups<'a, S>
where
    S: AsyncSignal + DeserializeOwned + Send + Sync,
    for<'c> S::Context<'c>: FromJobAsync<'c> + Send,
{
    /// Groups applied with `settings`, keying messages without an id by `stream_key`.
    pub(crate) fn new(
        settings: &'a Settings,
        stream_key: &'a str,
        stop: &'a AtomicBool,
        first_tries: &'a FirstTries,
    ) -> Self {
        Groups {
            settings,
            stream_key,
            stop,
            first_tries,
            signal: PhantomData,
        }
    }

    /// A group of messages in one transaction, each after a savepoint: its inbox row and its
    /// handlers' effects, or (rolled back to its savepoint) a dead row or nothing; one commit;
    /// then each is acked, naked with backoff, or terminated. While the group runs, JetStream
    /// is told every third of `ack_wait` that it and the messages `waiting` behind it are in
    /// progress (a long handler is not delivered to another instance). When the database fails
    /// (begin, a statement of the subscriber's own, the connection) the group is held and
    /// tried again after a pause, with the same in-progress acks: an outage uses up no
    /// delivery; so does a serialization failure or a deadlock, in a handler's statement or at
    /// the commit (tried again as it is, a few times). A commit the database refuses for what
    /// a handler wrote (a deferred constraint) is that message's failure: the group is tried
    /// again one message at a time, and the one whose commit fails is naked or dead.
    pub(crate) async fn handle(
        &self,
        group: &[jetstream::Message],
        waiting: &[jetstream::Message],
    ) {
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
    /// message is then naked or dead, and `true`). A serialization failure or a deadlock is
    /// tried again as it is, charged to no message, up to [`TRANSIENT_TRIES`] times in a row;
    /// then it counts as a refusal (a handler that always meets one fails its own message).
    async fn until_done(
        &self,
        group: &[jetstream::Message],
        later: &[jetstream::Message],
        waiting: &[jetstream::Message],
    ) -> bool {
        let mut pause = Duration::from_millis(100);
        let keep_alive = (self.settings.ack_wait / 3).max(Duration::from_millis(100));
        let held = [group, later, waiting];
        let mut transient = 0;
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
            let refusal = match result {
                Ok(acks) => {
                    // A lost ack means one more delivery, which the inbox skips.
                    for (message, ack) in group.iter().zip(acks) {
                        self.settle(message, ack).await;
                    }
                    return true;
                }
                Err(GroupError::Transient(_)) if transient + 1 < TRANSIENT_TRIES => {
                    transient += 1;
                    None
                }
                Err(GroupError::Transient(error)) => Some(error),
                Err(GroupError::Refused(error)) => {
                    let text = format!("the database refused the commit: {error}");
                    queue::database_error("commit", &error.into());
                    Some(text)
                }
                Err(GroupError::Database(error)) => {
                    queue::database_error("inbox", &error.into());
                    None
                }
            };
            if let Some(error) = refusal {
                if group.len() > 1 {
                    return false;
                }
                match self.refused(&group[0], error).await {
                    Ok(ack) => {
                        self.settle(&group[0], ack).await;
                        return true;
                    }
                    Err(error) => queue::database_error("inbox", &error.into()),
                }
            }
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
        let mut tx = self.settings.pool.begin().await?;
        let mut acks = Vec::with_capacity(group.len());
        for message in group {
            acks.push(self.apply(&mut tx, message).await?);
        }
        tx.commit()
            .await
            .map_err(|error| match transience(&error) {
                Some(Transience::LostConnection) => GroupError::Database(error),
                Some(Transience::Conflict) => {
                    let text = error.to_string();
                    queue::database_error("commit", &error.into());
                    GroupError::Transient(text)
                }
                None if matches!(error, sqlx::Error::Database(_)) => GroupError::Refused(error),
                None => GroupError::Database(error),
            })?;
        Ok(acks)
    }

    /// One message whose commit the database refused (`error`): a failed delivery (naked
    /// after a backoff), or dead once past its budget (recorded in a transaction of its own).
    async fn refused(
        &self,
        message: &jetstream::Message,
        error: String,
    ) -> Result<AckKind, sqlx::Error> {
        let received = self.received(message);
        let failure = Failure::Retry(error);
        let (error, dead) = self.verdict(&received, failure);
        if !dead {
            return Ok(self.nak(&received));
        }
        let mut tx = self.settings.pool.begin().await?;
        let (consumer, subject) = (&self.settings.consumer, message.subject.as_str());
        inbox::record(
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

    /// Acknowledges a message whose group committed; a message done or dead is forgotten by
    /// the age budget.
    async fn settle(&self, message: &jetstream::Message, ack: AckKind) {
        if !matches!(ack, AckKind::Nak(_)) {
            self.first_tries.settled(&self.received(message).id);
        }
        let how = match ack {
            AckKind::Nak(_) => Settled::Redelivered,
            AckKind::Term => Settled::Dead,
            _ => Settled::Acked,
        };
        meter::settled(&self.settings.consumer, message.subject.as_str(), how);
        let _ = message.ack_with(ack).await;
    }

    /// What a message says of itself: its inbox key, deliveries, sequence.
    fn received(&self, message: &jetstream::Message) -> Received {
        let now = self.settings.clock.now();
        let (delivered, sequence) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(_) => (1, 0),
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
            now,
        }
    }

    /// A failed message's error, and whether it is dead: past `payload_grace` for a payload
    /// this release cannot read, past `max_age` for a handler failure, or `max_deliver`. Both
    /// ages count from this subscriber's first try of the message (see `budget`).
    fn verdict(&self, received: &Received, failure: Failure) -> (String, bool) {
        let age = self.first_tries.age(&received.id, received.now);
        let out_of_deliveries = received.delivered >= self.settings.max_deliver;
        match failure {
            Failure::Payload(error) => {
                let grace = self.settings.payload_grace.as_millis() as i64;
                (error, out_of_deliveries || age >= grace)
            }
            Failure::Retry(error) | Failure::Transient(error) => {
                let budget = self.settings.max_age.as_millis() as i64;
                (error, out_of_deliveries || age >= budget)
            }
        }
    }

    /// A nak with the retry policy's backoff.
    fn nak(&self, received: &Received) -> AckKind {
        let attempt = received.delivered.max(1) as u32;
        AckKind::Nak(Some(self.settings.retry.delay(attempt, fastrand::f64())))
    }

    /// One message of a group, after a savepoint: how to acknowledge it once the group commits.
    /// `Err`: the transaction itself failed, or a handler met a serialization failure or a
    /// deadlock (the whole group is tried again).
    async fn apply(
        &self,
        tx: &mut signals_queue::Transaction,
        message: &jetstream::Message,
    ) -> Result<AckKind, GroupError> {
        let received = self.received(message);
        let subject = message.subject.as_str();
        let consumer = &self.settings.consumer;
        queue::savepoint(tx.tx(), "SAVEPOINT signals_message").await?;
        if !inbox::record(tx.tx(), consumer, &received.id, subject, None, received.now).await? {
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
                Err(error) => return Err(error.into()),
            },
            Err(Failure::Transient(error)) => return Err(GroupError::Transient(error)),
            Err(failure) => failure,
        };
        queue::savepoint(tx.tx(), "ROLLBACK TO SAVEPOINT signals_message").await?;
        let (error, dead) = self.verdict(&received, failure);
        if !dead {
            return Ok(self.nak(&received));
        }
        inbox::record(
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
            &self.settings.state,
            sequence as i64,
            event_id,
            delivered.max(0) as u32,
        );
        let notified = AssertUnwindSafe(async {
            let mut ctx = <S::Context<'_> as FromJobAsync<'_>>::from_job(scope)
                .map_err(|error| Failure::Retry(error.to_string()))?;
            signals_core::notify_async(&signal, &mut ctx)
                .await
                .map_err(|error| match caused_by_transience(&error) {
                    true => Failure::Transient(error_chain(&error)),
                    false => Failure::Retry(error_chain(&error)),
                })
        })
        .catch_unwind();
        // Past the timeout the handlers' future is dropped (the caller rolls the message's
        // savepoint back): a hung handler fails its message instead of holding the group.
        let timeout = self.settings.handler_timeout;
        match tokio::time::timeout(timeout, notified).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(failure))) => Err(failure),
            Ok(Err(panic)) => Err(Failure::Retry(queue::panic_message(&*panic))),
            Err(_) => Err(Failure::Retry(format!(
                "the handler timed out after {timeout:?}"
            ))),
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

/// How many times in a row a group meets a serialization failure or a deadlock before that
/// counts as a refusal (about 25 s of pauses).
const TRANSIENT_TRIES: u32 = 10;

/// Why a group did not commit.
enum GroupError {
    /// The database failed: the connection (lost at any point, the commit included), `BEGIN`,
    /// or a statement of the subscriber's own. Tried again until it works.
    Database(sqlx::Error),
    /// A serialization failure or a deadlock, in a handler's statement or at the commit, or a
    /// lost connection in a handler's statement: the group is tried again as it is, charged to
    /// no message (up to [`TRANSIENT_TRIES`] times in a row).
    Transient(String),
    /// The database refused the commit for what the group wrote.
    Refused(sqlx::Error),
}

impl From<sqlx::Error> for GroupError {
    fn from(error: sqlx::Error) -> Self {
        GroupError::Database(error)
    }
}

/// What a message says of itself (see `Groups::received`).
struct Received {
    /// Its inbox key: its `Nats-Msg-Id`, or the stream's key and its sequence.
    id: String,
    delivered: i64,
    sequence: u64,
    now: i64,
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

/// Why a message's effects rolled back.
enum Failure {
    /// It does not deserialize: only another release of this consumer can help, within
    /// `payload_grace`.
    Payload(String),
    /// A handler or the database failed: deliver it again after a backoff.
    Retry(String),
    /// A handler's statement met a serialization failure, a deadlock or a lost connection:
    /// not the message's fault (see [`GroupError::Transient`]).
    Transient(String),
}

/// Database errors that are no one message's fault.
#[derive(Debug, PartialEq, Eq)]
enum Transience {
    /// A serialization failure (`40001`) or a deadlock (`40P01`): the transaction may succeed
    /// as it is when tried again.
    Conflict,
    /// The connection was lost or terminated (class `08`, `57P01` to `57P03`, an I/O error).
    LostConnection,
}

/// Whether `error` is no one message's fault, and how.
fn transience(error: &sqlx::Error) -> Option<Transience> {
    match error {
        sqlx::Error::Database(error) => sqlstate_transience(error.code().as_deref()?),
        sqlx::Error::Io(_) => Some(Transience::LostConnection),
        _ => None,
    }
}

/// [`transience`] by SQLSTATE.
fn sqlstate_transience(code: &str) -> Option<Transience> {
    match code {
        "40001" | "40P01" => Some(Transience::Conflict),
        "57P01" | "57P02" | "57P03" => Some(Transience::LostConnection),
        code if code.starts_with("08") => Some(Transience::LostConnection),
        _ => None,
    }
}

/// Whether a handler's error was caused by a transient database error (anywhere in its
/// chain of sources).
fn caused_by_transience(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            if transience(error).is_some() {
                return true;
            }
        }
        if let Some(signals_queue::Error::Sqlx(error)) =
            error.downcast_ref::<signals_queue::Error>()
        {
            if transience(error).is_some() {
                return true;
            }
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
#[test]
fn serialization_failures_deadlocks_and_lost_connections_are_transient() {
    assert_eq!(sqlstate_transience("40001"), Some(Transience::Conflict));
    assert_eq!(sqlstate_transience("40P01"), Some(Transience::Conflict));
    assert_eq!(
        sqlstate_transience("57P01"),
        Some(Transience::LostConnection)
    );
    assert_eq!(
        sqlstate_transience("08006"),
        Some(Transience::LostConnection)
    );
    assert_eq!(
        sqlstate_transience("23505"),
        None,
        "a unique violation is the message's"
    );
    assert_eq!(
        sqlstate_transience("P0001"),
        None,
        "so is what a trigger raises"
    );
}
