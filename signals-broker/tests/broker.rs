//! The broker rung against a real NATS JetStream server, with PostgreSQL and SQLite producers:
//! a publishing function's message leaves only when its transaction commits, the relay's retries
//! are deduplicated by the stream, and a subscriber applies each message once.
//!
//! NATS is at `SIGNALS_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); each test uses a stream
//! and a subject prefix of its own and deletes the stream. Without a server the tests print why
//! and pass, except under `CI=true`, where they fail.

#[path = "../../signals-queue/tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use signals_broker::{ensure_stream, inbox_stats, Relay, Subscriber};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{with_db, AsyncJobScope, EnqueueAsync, FromJobAsync, RetryPolicy, Tx};
use support::Db;

struct AppCtx<'a> {
    tx: Tx<'a>,
}

impl EnqueueAsync for AppCtx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for AppCtx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        Ok(AppCtx {
            tx: job.transaction(),
        })
    }
}

/// The producer's domain event: rich, and never on the wire.
#[derive(Signal)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct OrderPlaced {
    order_id: i64,
    #[allow(dead_code)]
    card_number: String,
}

/// The thin message: what consumers need, nothing more.
#[derive(Serialize)]
struct OrderPlacedMessage {
    order_id: i64,
}

#[on(OrderPlaced, publish = "test.orders.placed")]
fn order_placed_message(sig: &OrderPlaced) -> OrderPlacedMessage {
    OrderPlacedMessage {
        order_id: sig.order_id,
    }
}

/// The consumer's signal: the message, as it arrives.
#[derive(Signal, Deserialize, Debug)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct OrderPlacedReceived {
    order_id: i64,
}

/// Every delivery the handler saw, in order (the tests run at once: each looks at its own ids).
static SEEN: Mutex<Vec<i64>> = Mutex::new(Vec::new());
/// The messages whose handler failed once already (see `record_shipment`).
static FLAKY: Mutex<std::collections::BTreeSet<i64>> =
    Mutex::new(std::collections::BTreeSet::new());
/// Deliveries of poison messages.
static POISON_DELIVERIES: AtomicUsize = AtomicUsize::new(0);
/// Deliveries of the message whose handler swallows a database error.
static SWALLOWED: AtomicUsize = AtomicUsize::new(0);

/// A negative order id is poison: the handler always fails on it.
#[on(OrderPlacedReceived)]
async fn record_shipment(sig: &OrderPlacedReceived, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    SEEN.lock().unwrap().push(sig.order_id);
    if sig.order_id == 70_000 {
        // A long handler: longer than the test's `ack_wait`.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    if (130_000..131_000).contains(&sig.order_id) && FLAKY.lock().unwrap().insert(sig.order_id) {
        // A flaky handler: fails the first delivery of each of these messages.
        return Err(format!("order {} is not ready yet", sig.order_id).into());
    }
    if sig.order_id == 120_000 {
        // A hung handler: it never returns.
        std::future::pending::<()>().await;
    }
    if sig.order_id == -2 {
        // Swallows a database error and returns `Ok`, leaving its transaction failed.
        SWALLOWED.fetch_add(1, Ordering::SeqCst);
        let _ = with_db!(&mut ctx.tx, |conn| sqlx::query("SELECT 1 / 0")
            .execute(conn)
            .await
            .map(drop));
        return Ok(());
    }
    if sig.order_id < 0 {
        POISON_DELIVERIES.fetch_add(1, Ordering::SeqCst);
        return Err(format!("order {} does not exist", sig.order_id).into());
    }
    let sql = "INSERT INTO shipments (order_id) VALUES ($1)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.order_id)
        .execute(conn)
        .await
        .map(drop))?;
    Ok(())
}

const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A stream and a subject prefix of the test's own, deleted at the end.
struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    prefix: String,
}

impl Broker {
    async fn connect() -> Option<Broker> {
        let url = std::env::var("SIGNALS_TEST_NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned());
        let client = match async_nats::connect(&url).await {
            Ok(client) => client,
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("NATS at {url} is required under CI: {error}")
            }
            Err(error) => {
                eprintln!(
                    "skipping: NATS at {url} is unreachable ({error}); set SIGNALS_TEST_NATS_URL"
                );
                return None;
            }
        };
        let id = uuid::Uuid::now_v7().simple().to_string();
        let broker = Broker {
            js: jetstream::new(client.clone()),
            client,
            stream: format!("TEST_{id}"),
            prefix: format!("t{id}."),
        };
        let subjects = format!("{}>", broker.prefix);
        ensure_stream(&broker.js, &broker.stream, &[&subjects])
            .await
            .unwrap();
        Some(broker)
    }

    fn subject(&self) -> String {
        format!("{}test.orders.placed", self.prefix)
    }

    /// Relays every message waiting in `db`'s outbox, then stops.
    async fn relay_until_idle(&self, db: &Db) {
        self.relay(db)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
    }

    fn relay(&self, db: &Db) -> signals_broker::RelayBuilder {
        Relay::builder(db.pool.clone(), self.client.clone())
            .subject_prefix(&self.prefix)
            .poll_interval(Duration::from_millis(10))
    }

    fn subscriber(
        &self,
        db: &Db,
        consumer: &str,
    ) -> signals_broker::SubscriberBuilder<OrderPlacedReceived> {
        Subscriber::<OrderPlacedReceived>::builder(
            db.pool.clone(),
            self.client.clone(),
            &self.stream,
            consumer,
            self.subject(),
        )
        .retry(RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
        })
    }

    /// The stream's messages.
    async fn messages(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn delete(mut self) {
        self.js.delete_stream(&self.stream).await.unwrap();
        self.stream.clear();
    }
}

/// A test that failed before `delete` still deletes its stream, on a thread of its own.
impl Drop for Broker {
    fn drop(&mut self) {
        if self.stream.is_empty() {
            return;
        }
        let (client, stream) = (self.client.clone(), std::mem::take(&mut self.stream));
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    jetstream::new(client)
                        .delete_stream(&stream)
                        .await
                        .map(drop)
                })
        })
        .join();
    }
}

/// Places orders `ids`, each in a transaction of its own that commits (or rolls back).
async fn place(db: &Db, ids: impl IntoIterator<Item = i64>, commit: bool) {
    for order_id in ids {
        let mut tx = db.pool.begin().await.unwrap();
        let signal = OrderPlaced {
            order_id,
            card_number: "4242 4242 4242 4242".into(),
        };
        notify_async(&signal, &mut AppCtx { tx: tx.tx() })
            .await
            .unwrap();
        match commit {
            true => tx.commit().await.unwrap(),
            false => tx.rollback().await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_leaves_only_if_its_transaction_commits_and_a_retry_is_deduplicated() {
    for db in Db::all().await {
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let name = db.name();
        let before = broker.messages().await;
        place(&db, [1, 2, 3], true).await;
        place(&db, [4], false).await;
        let payload = db.count("SELECT COUNT(*) FROM signals_jobs").await;
        assert_eq!(payload, 3, "{name}: the rolled-back order wrote no job");
        broker.relay_until_idle(&db).await;
        assert_eq!(broker.messages().await - before, 3, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                .await,
            3,
            "{name}: done after the PubAck"
        );
        // The relay died after JetStream stored the messages and before it recorded them:
        // the jobs run again, with the same message ids, and the stream drops the duplicates.
        db.execute("UPDATE signals_jobs SET state = 'pending', finished_at = NULL")
            .await;
        broker.relay_until_idle(&db).await;
        assert_eq!(
            broker.messages().await - before,
            3,
            "{name}: no duplicate stored"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                .await,
            3,
            "{name}"
        );
        db.drop_schema().await;
        broker.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_applies_each_message_once_in_order_and_skips_a_redelivery() {
    for db in Db::all().await {
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let name = db.name();
        let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
        // A message whose effects committed but whose ack was lost (the consumer died in
        // between) is in the inbox already: its redelivery is acked and skipped.
        let first = if db.schema.is_some() { 100 } else { 200 };
        place(&db, first..first + 20, true).await;
        let sql = match db.pool.is_postgres() {
            true => "SELECT event_id::text || ':' || handler FROM signals_jobs ORDER BY id LIMIT 1",
            false => "SELECT event_id || ':' || handler FROM signals_jobs ORDER BY id LIMIT 1",
        };
        let redelivered: String = with_db!(&db.pool, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await)
        .unwrap();
        let subscriber = broker.subscriber(&db, &consumer).build().await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let sql = format!(
            "INSERT INTO signals_inbox (consumer, message_id, subject, state, received_at) VALUES ('{consumer}', '{redelivered}', 's', 'done', {now})"
        );
        with_db!(&db.pool, |pool| sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        broker.relay_until_idle(&db).await;
        subscriber.run_until_idle().await.unwrap();
        assert_eq!(
            db.count("SELECT COUNT(*) FROM shipments").await,
            19,
            "{name}"
        );
        assert_eq!(
            db.count("SELECT COUNT(DISTINCT order_id) FROM shipments")
                .await,
            19,
            "{name}: each once"
        );
        let seen: Vec<i64> = SEEN
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|id| (first..first + 20).contains(id))
            .collect();
        let expected: Vec<i64> = (first + 1..first + 20).collect();
        assert_eq!(
            seen, expected,
            "{name}: one consumer keeps the subject's order"
        );
        let inbox = inbox_stats(&db.pool, &consumer).await.unwrap();
        assert_eq!((inbox.done, inbox.dead), (20, 0), "{name}");
        let listed = signals_broker::subscriptions()
            .into_iter()
            .find(|s| s.consumer == consumer)
            .unwrap();
        assert_eq!(
            listed.to_string(),
            format!(
                "broker::OrderPlacedReceived <- {} (stream {}, consumer {consumer})",
                broker.subject(),
                broker.stream
            )
        );
        db.drop_schema().await;
        broker.delete().await;
    }
}

/// The metrics of this test binary (installed by the first test that asks): each test reads
/// the series of its own subjects and consumers.
fn recorded() -> &'static metrics_util::debugging::Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder");
        snapshotter
    })
}

/// The counters of a snapshot (a snapshot takes the counts since the last one, so one test
/// reads them).
type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
)>;

/// The counter `name` of `snapshot` summed over the series whose label `label` is `value`.
fn counted(snapshot: &Snapshot, name: &str, label: &str, value: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == label && l.value() == value)
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_after_max_deliveries_and_the_others_go_on() {
    recorded();
    for db in Db::all().await {
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let name = db.name();
        let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
        place(&db, [-1, 7], true).await;
        broker.relay_until_idle(&db).await;
        let deliveries = POISON_DELIVERIES.load(Ordering::SeqCst);
        broker
            .subscriber(&db, &consumer)
            .max_deliver(3)
            .ack_wait(Duration::from_secs(2))
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(
            POISON_DELIVERIES.load(Ordering::SeqCst) - deliveries,
            3,
            "{name}: the poison message was delivered max_deliver times"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM shipments").await,
            1,
            "{name}"
        );
        let inbox = inbox_stats(&db.pool, &consumer).await.unwrap();
        assert_eq!((inbox.done, inbox.dead), (1, 1), "{name}");
        // The metrics say the same: two published, one acked, two naked, one dead.
        let snapshot = recorded().snapshot().into_vec();
        let subject = broker.subject();
        assert_eq!(
            counted(
                &snapshot,
                "signals_messages_published_total",
                "subject",
                &subject
            ),
            2,
            "{name}"
        );
        let of_consumer = |series| counted(&snapshot, series, "consumer", &consumer);
        assert_eq!(of_consumer("signals_messages_acked_total"), 1, "{name}");
        assert_eq!(
            of_consumer("signals_messages_redelivered_total"),
            2,
            "{name}"
        );
        assert_eq!(of_consumer("signals_messages_dead_total"), 1, "{name}");
        let sql = "SELECT error FROM signals_inbox WHERE state = 'dead'";
        let error: String = with_db!(&db.pool, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await)
        .unwrap();
        assert!(error.contains("order -1 does not exist"), "{name}: {error}");
        db.drop_schema().await;
        broker.delete().await;
    }
}

#[test]
fn the_catalog_shows_published_subjects() {
    let table = signals_core::catalog().to_string();
    assert!(
        table.contains("broker::order_placed_message [publish test.orders.placed]"),
        "{table}"
    );
}

/// A stream an operator tuned (a one-hour `max_age`, a subject of its own) keeps its settings
/// when a relay or subscriber sets it up again: only the subjects it lacks are added, and what
/// differs is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_up_an_existing_stream_keeps_what_operators_set() {
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let (own, more) = (
        format!("{}>", broker.prefix),
        format!("x{}>", broker.prefix),
    );
    let mut config = broker
        .js
        .get_stream(&broker.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.max_age = Duration::from_secs(3600);
    config.duplicate_window = Duration::from_secs(30);
    broker.js.update_stream(config).await.unwrap();

    let setup = ensure_stream(&broker.js, &broker.stream, &[&own, &more])
        .await
        .unwrap();
    assert!(!setup.created);
    assert_eq!(setup.added_subjects, std::slice::from_ref(&more));
    assert_eq!(setup.differences.len(), 1, "{:?}", setup.differences);
    assert!(setup.differences[0].contains("duplicate window"));
    let config = broker
        .js
        .get_stream(&broker.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(
        config.max_age,
        Duration::from_secs(3600),
        "the operator's max_age stays"
    );
    assert_eq!(config.subjects, [own.clone(), more]);
    // Again: nothing to add.
    let again = ensure_stream(&broker.js, &broker.stream, &[&own])
        .await
        .unwrap();
    assert!(again.added_subjects.is_empty() && !again.created);
}

/// During a broker outage (here: a subject no stream takes, so every publish fails), a message
/// waits as long as it takes: past the 25 attempts a queued handler gets, it is still pending.
/// With a relay's `max_age` it is dead once older, and `retry_dead_of` brings that one
/// function's messages back; they go out when the broker takes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_outlives_a_broker_outage_and_dead_messages_come_back_by_function() {
    for db in Db::all().await {
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let name = db.name();
        place(&db, [1], true).await;
        let fast = RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let outage = broker
            .relay(&db)
            .subject_prefix(format!("nowhere.{}", broker.prefix))
            .retry(fast)
            .build()
            .await
            .unwrap()
            .start();
        support::wait_for("30 failed publishes", || async {
            db.count("SELECT CAST(MAX(attempt) AS BIGINT) FROM signals_jobs")
                .await
                >= 30
        })
        .await;
        outage.shutdown(Duration::from_secs(10)).await;
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state IN ('pending', 'scheduled', 'available')")
                .await,
            1,
            "{name}: still waiting for the broker"
        );

        // With a maximum age, a failing message older than it is dead.
        db.execute("UPDATE signals_jobs SET run_at = 0").await;
        let bounded = broker
            .relay(&db)
            .subject_prefix(format!("nowhere.{}", broker.prefix))
            .retry(fast)
            .max_age(Duration::ZERO)
            .build()
            .await
            .unwrap()
            .start();
        support::wait_for("the message to be dead", || async {
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'dead'")
                .await
                == 1
        })
        .await;
        bounded.shutdown(Duration::from_secs(10)).await;
        let handler: String = with_db!(&db.pool, |pool| sqlx::query_scalar(
            "SELECT handler FROM signals_jobs"
        )
        .fetch_one(pool)
        .await
        .unwrap());
        let queue = signals_queue::AsyncQueue::new(db.pool.clone());
        assert_eq!(queue.retry_dead_of("no::such::function").await.unwrap(), 0);
        assert_eq!(queue.retry_dead_of(&handler).await.unwrap(), 1, "{name}");
        let before = broker.messages().await;
        broker.relay_until_idle(&db).await;
        assert_eq!(
            broker.messages().await - before,
            1,
            "{name}: published after the outage"
        );
        db.drop_schema().await;
        broker.delete().await;
    }
}

/// Runs `sql` on the test's PostgreSQL schema.
async fn pg_execute(db: &Db, sql: &str) {
    db.execute_owned(sql.to_owned()).await;
}

/// The database fails every inbox write for 4 seconds (a trigger raising, as a read-only node
/// would) while 200 messages arrive, with `max_deliver(3)`: the subscriber holds its messages
/// and tries again, uses up no delivery, and once the database is back every message is
/// applied once and none is dead or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_uses_up_no_delivery() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    place(&db, 10_000..10_200, true).await;
    broker.relay_until_idle(&db).await;
    pg_execute(
        &db,
        "CREATE FUNCTION read_only() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction'; END $$;
         CREATE TRIGGER read_only BEFORE INSERT ON signals_inbox
             FOR EACH ROW EXECUTE FUNCTION read_only();",
    )
    .await;
    let subscriber = broker
        .subscriber(&db, &consumer)
        .max_deliver(3)
        .ack_wait(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let stop = subscriber.stopper();
    let running = tokio::spawn(subscriber.run());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM shipments").await,
        0,
        "nothing commits while the database refuses"
    );
    pg_execute(&db, "DROP TRIGGER read_only ON signals_inbox").await;
    support::wait_for("every message", || async {
        inbox_stats(&db.pool, &consumer).await.unwrap().done == 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    running.await.unwrap().unwrap();
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT order_id) FROM shipments WHERE order_id >= 10000")
            .await,
        200
    );
    assert_eq!(inbox_stats(&db.pool, &consumer).await.unwrap().dead, 0);
    db.drop_schema().await;
    broker.delete().await;
}

/// 64 messages waiting when a subscriber starts share transactions 16 at most: one savepoint
/// each, with room for handlers' own, under PostgreSQL's 64 cached subtransactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holds_at_most_16_messages() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    place(&db, 20_000..20_064, true).await;
    broker.relay_until_idle(&db).await;
    pg_execute(
        &db,
        "CREATE TABLE txids (order_id BIGINT, txid BIGINT);
         CREATE FUNCTION record_txid() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO txids VALUES (NEW.order_id, txid_current()); RETURN NULL; END $$;
         CREATE TRIGGER record_txid AFTER INSERT ON shipments
             FOR EACH ROW EXECUTE FUNCTION record_txid();",
    )
    .await;
    broker
        .subscriber(&db, &consumer)
        .build()
        .await
        .unwrap()
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM txids").await, 64);
    let largest = db
        .count("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM txids GROUP BY txid) AS t")
        .await;
    assert!(largest <= 16, "{largest} messages in one transaction");
    db.drop_schema().await;
    broker.delete().await;
}

/// Messages published without a `Nats-Msg-Id` are keyed by stream sequence and the stream's
/// creation: after the stream is re-created (its sequence restarts), new messages are not
/// taken for old ones. The inbox forgets rows older than its retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_is_not_a_duplicate_and_the_inbox_is_pruned() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    let publish = |ids: std::ops::Range<i64>| {
        let (js, subject) = (broker.js.clone(), broker.subject());
        async move {
            for id in ids {
                let payload = format!("{{\"order_id\": {id}}}");
                js.publish(subject.clone(), payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };
    publish(30_000..30_003).await;
    let drain = || async {
        broker
            .subscriber(&db, &consumer)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
    };
    drain().await;
    broker.js.delete_stream(&broker.stream).await.unwrap();
    let subjects = format!("{}>", broker.prefix);
    ensure_stream(&broker.js, &broker.stream, &[&subjects])
        .await
        .unwrap();
    publish(30_003..30_006).await;
    drain().await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM shipments WHERE order_id >= 30000")
            .await,
        6,
        "the second stream's messages 1 to 3 are new messages"
    );
    assert_eq!(inbox_stats(&db.pool, &consumer).await.unwrap().done, 6);
    broker
        .subscriber(&db, &consumer)
        .inbox_retention(Duration::ZERO)
        .build()
        .await
        .unwrap()
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(
        inbox_stats(&db.pool, &consumer).await.unwrap().done,
        0,
        "pruned"
    );
    db.drop_schema().await;
    broker.delete().await;
}

/// A message this release cannot read (a producer deployed first sends a new shape) is
/// delivered again within the payload grace rather than dead at once; past the grace it is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_waits_out_the_payload_grace() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    broker
        .js
        .publish(broker.subject(), r#"{"order": {"id": 1}}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let within = broker.subscriber(&db, &consumer).build().await.unwrap();
    // Within the grace it keeps coming back, and is not dead.
    let waited = tokio::time::timeout(Duration::from_secs(2), within.run_until_idle()).await;
    assert!(waited.is_err(), "still pending within the grace");
    assert_eq!(inbox_stats(&db.pool, &consumer).await.unwrap().dead, 0);
    broker
        .subscriber(&db, &consumer)
        .payload_grace(Duration::ZERO)
        .build()
        .await
        .unwrap()
        .run_until_idle()
        .await
        .unwrap();
    let sql = "SELECT error FROM signals_inbox WHERE state = 'dead'";
    let error: String = with_db!(&db.pool, |pool| sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await)
    .unwrap();
    assert!(
        error.starts_with("the message does not deserialize into the signal"),
        "{error}"
    );
    db.drop_schema().await;
    broker.delete().await;
}

/// A TCP proxy in front of NATS that can go silent: it holds what it reads instead of
/// forwarding it, both ways, as a hung server or a network dropping packets would.
struct SilentProxy {
    url: String,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentProxy {
    async fn start() -> SilentProxy {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let upstream =
            std::env::var("SIGNALS_TEST_NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned());
        let upstream = upstream.trim_start_matches("nats://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read) as _, Box::new(client_write) as _),
                ] {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0; 64 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buffer).await {
                            while flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            if to.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        SilentProxy { url, silent }
    }
}

/// NATS goes silent (a hung server) while the relay holds a batch of 40 messages: their
/// PubAcks are awaited together, so the whole batch fails after one ack timeout (5 s), not
/// one timeout per message (200 s), and is published once the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_costs_a_batch_one_ack_timeout() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let proxy = SilentProxy::start().await;
    let client = async_nats::connect(&proxy.url).await.unwrap();
    place(&db, 40_000..40_040, true).await;
    proxy.silent.store(true, Ordering::SeqCst);
    let relay = Relay::builder(db.pool.clone(), client)
        .subject_prefix(&broker.prefix)
        .poll_interval(Duration::from_millis(10))
        .build()
        .await
        .unwrap()
        .start();
    let started = std::time::Instant::now();
    support::wait_for("every publish of the batch to fail", || async {
        db.count("SELECT COUNT(*) FROM signals_jobs WHERE attempt >= 1 AND last_error IS NOT NULL")
            .await
            == 40
    })
    .await;
    let failed_after = started.elapsed();
    assert!(
        failed_after < Duration::from_secs(20),
        "the batch failed after {failed_after:?}"
    );
    proxy.silent.store(false, Ordering::SeqCst);
    support::wait_for("the batch published", || async {
        db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
            .await
            == 40
    })
    .await;
    relay.shutdown(Duration::from_secs(10)).await;
    assert_eq!(broker.messages().await, 40, "each message stored once");
    db.drop_schema().await;
    broker.delete().await;
}

/// An operator deletes the durable consumer while the subscriber runs: the subscriber's pulls
/// fail, it keeps going, binds the consumer again, and handles what was published meanwhile
/// (the messages the new consumer delivers again are skipped by the inbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_bound_again_and_the_subscriber_carries_on() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    let relay = broker.relay(&db).build().await.unwrap().start();
    let subscriber = broker.subscriber(&db, &consumer).build().await.unwrap();
    let stop = subscriber.stopper();
    let running = tokio::spawn(subscriber.run());
    place(&db, 50_000..50_005, true).await;
    support::wait_for("the first messages", || async {
        inbox_stats(&db.pool, &consumer).await.unwrap().done == 5
    })
    .await;
    let stream = broker.js.get_stream(&broker.stream).await.unwrap();
    stream.delete_consumer(&consumer).await.unwrap();
    place(&db, 50_005..50_010, true).await;
    support::wait_for("the messages published after the deletion", || async {
        inbox_stats(&db.pool, &consumer).await.unwrap().done == 10
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    running.await.unwrap().unwrap();
    relay.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM shipments WHERE order_id >= 50000")
            .await,
        10,
        "each message applied once"
    );
    db.drop_schema().await;
    broker.delete().await;
}

/// A handler that swallows a database error and returns `Ok` leaves the group's transaction
/// failed: that is its message's failure (naked, then dead), not a database outage that would
/// hold the group, and the messages beside it, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_leaves_its_transaction_failed_fails_its_own_message() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    place(&db, [60_001, -2, 60_002], true).await;
    broker.relay_until_idle(&db).await;
    let before = SWALLOWED.load(Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(30),
        broker
            .subscriber(&db, &consumer)
            .max_deliver(2)
            .build()
            .await
            .unwrap()
            .run_until_idle(),
    )
    .await
    .expect("the subscriber went on")
    .unwrap();
    assert_eq!(
        SWALLOWED.load(Ordering::SeqCst) - before,
        2,
        "delivered max_deliver times"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM shipments WHERE order_id >= 60000")
            .await,
        2,
        "the messages beside it committed"
    );
    let inbox = inbox_stats(&db.pool, &consumer).await.unwrap();
    assert_eq!((inbox.done, inbox.dead), (2, 1));
    db.drop_schema().await;
    broker.delete().await;
}

/// A handler runs longer than `ack_wait` while a second instance of the subscriber shares the
/// durable consumer: in-progress acks keep JetStream from delivering its message again (to the
/// other instance or at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handler_keeps_its_message_with_in_progress_acks() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    place(&db, [70_000], true).await;
    broker.relay_until_idle(&db).await;
    let mut instances = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let subscriber = broker
            .subscriber(&db, &consumer)
            .ack_wait(Duration::from_secs(1))
            .build()
            .await
            .unwrap();
        stops.push(subscriber.stopper());
        instances.push(tokio::spawn(subscriber.run()));
    }
    support::wait_for("the long message", || async {
        inbox_stats(&db.pool, &consumer).await.unwrap().done == 1
    })
    .await;
    for stop in &stops {
        stop.store(true, Ordering::SeqCst);
    }
    for instance in instances {
        instance.await.unwrap().unwrap();
    }
    let stream = broker.js.get_stream(&broker.stream).await.unwrap();
    let info = stream.consumer_info(&consumer).await.unwrap();
    // The consumer's sequence counts every delivery, redeliveries included.
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    db.drop_schema().await;
    broker.delete().await;
}

/// Messages a rescue marked as suspects (their relay was killed holding them) are published
/// by the next relay: a message cannot crash a relay, so nothing waits for them to run alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_rescued_from_a_killed_relay_are_published() {
    for db in Db::all().await {
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let name = db.name();
        place(&db, 80_000..80_003, true).await;
        // As a rescue leaves them: due, charged one crash.
        db.execute("UPDATE signals_jobs SET crashes = 1, attempt = 1")
            .await;
        tokio::time::timeout(Duration::from_secs(30), broker.relay_until_idle(&db))
            .await
            .expect("the relay published the rescued messages");
        assert_eq!(broker.messages().await, 3, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                .await,
            3,
            "{name}"
        );
        db.drop_schema().await;
        broker.delete().await;
    }
}

/// The database refuses the relay's first completion write after a publish (a trigger raising
/// once, as a failover or a lock timeout would): the relay writes it again, and every message
/// ends `done` (before, they stayed `running` under the live relay until it restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_completion_write_is_written_again() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    place(&db, 100_000..100_005, true).await;
    pg_execute(
        &db,
        "CREATE SEQUENCE refusals;
         CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.state = 'done' AND nextval('refusals') = 1 THEN
                 RAISE EXCEPTION 'the server refused the completion (once)';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_once BEFORE UPDATE ON signals_jobs
             FOR EACH ROW EXECUTE FUNCTION refuse_once();",
    )
    .await;
    tokio::time::timeout(Duration::from_secs(20), broker.relay_until_idle(&db))
        .await
        .expect("the relay went idle: no message left running");
    assert_eq!(
        db.count("SELECT last_value FROM refusals").await,
        6,
        "refused once, then written"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
            .await,
        5
    );
    assert_eq!(broker.messages().await, 5, "each message stored once");
    db.drop_schema().await;
    broker.delete().await;
}

/// A completion write the database always refuses: the relay gives up on it before its lease
/// would lapse, and its maintenance fails the message the normal way (the attempt stays
/// charged), so it ends dead under `max_age(0)` instead of running forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_refused_completion_write_fails_the_message_the_normal_way() {
    for db in Db::all().await {
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let name = db.name();
        place(&db, [100_100, 100_101], true).await;
        match db.schema {
            Some(_) => {
                pg_execute(
                    &db,
                    "CREATE FUNCTION refuse_done() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF NEW.state = 'done' THEN
                             RAISE EXCEPTION 'the server refused the completion';
                         END IF;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER refuse_done BEFORE UPDATE ON signals_jobs
                         FOR EACH ROW EXECUTE FUNCTION refuse_done();",
                )
                .await
            }
            None => {
                db.execute(
                    "CREATE TRIGGER refuse_done BEFORE UPDATE ON signals_jobs
                     WHEN NEW.state = 'done'
                     BEGIN SELECT RAISE(ABORT, 'the database refused the completion'); END",
                )
                .await;
            }
        }
        let relay = broker
            .relay(&db)
            .lease(Duration::from_millis(600))
            .max_age(Duration::ZERO)
            .build()
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), relay.run_until_idle())
            .await
            .expect("the relay went idle: no message left running")
            .unwrap();
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'dead' AND attempt = 1")
                .await,
            2,
            "{name}: failed once each, attempt charged"
        );
        db.drop_schema().await;
        broker.delete().await;
    }
}

/// Rescued messages (suspects) behind a steady stream of new ones: the relay publishes them
/// while new messages keep waiting, not only once nothing else waits (which, under steady
/// traffic, is never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescued_messages_are_published_under_steady_traffic() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    place(&db, 110_000..110_003, true).await;
    // As a rescue leaves them: due, charged one crash.
    db.execute("UPDATE signals_jobs SET crashes = 1, attempt = 1")
        .await;
    // A backlog of 1,000 new messages.
    db.execute(
        "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                                   max_attempts, run_at, created_at)
         SELECT gen_random_uuid(), signal, handler, queue, priority, body, 'available',
                max_attempts, run_at, created_at
         FROM signals_jobs, generate_series(1, 1000)
         WHERE id = (SELECT MIN(id) FROM signals_jobs)",
    )
    .await;
    let relay = broker
        .relay(&db)
        .in_flight(10)
        .build()
        .await
        .unwrap()
        .start();
    // And a steady stream of new ones while the relay runs (stopped between two transactions:
    // a task aborted inside one could hand its connection back to the pool mid-transaction).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let pool = db.pool.clone();
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            for order_id in 110_100.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut tx = pool.begin().await.unwrap();
                let signal = OrderPlaced {
                    order_id,
                    card_number: "4242 4242 4242 4242".into(),
                };
                notify_async(&signal, &mut AppCtx { tx: tx.tx() })
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        })
    };
    support::wait_for("the rescued messages published", || async {
        db.count("SELECT COUNT(*) FROM signals_jobs WHERE crashes > 0 AND state = 'done'")
            .await
            == 3
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    relay.shutdown(Duration::from_secs(10)).await;
    // The first 1,003 rows are the suspects and the backlog placed before the relay started.
    let after = db
        .count(
            "SELECT COUNT(*) FROM signals_jobs
             WHERE crashes = 0 AND id <= (SELECT MIN(id) + 1002 FROM signals_jobs)
               AND (state <> 'done' OR finished_at >
                    (SELECT MAX(finished_at) FROM signals_jobs WHERE crashes > 0))",
        )
        .await;
    assert!(
        after > 0,
        "the suspects went out after every message of the backlog"
    );
    db.drop_schema().await;
    broker.delete().await;
}

/// A handler that never returns (a call without a timeout to a service that hangs): past the
/// subscriber's `handler_timeout` it is cancelled and its delivery counts as a failure of its
/// message, which is dead after `max_deliver`; the messages beside it commit, and the
/// subscriber goes on instead of holding the group forever with in-progress acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_times_out_and_fails_its_own_message() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    place(&db, [120_001, 120_000, 120_002], true).await;
    broker.relay_until_idle(&db).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        broker
            .subscriber(&db, &consumer)
            .handler_timeout(Duration::from_millis(300))
            .ack_wait(Duration::from_secs(1))
            .max_deliver(2)
            .build()
            .await
            .unwrap()
            .run_until_idle(),
    )
    .await
    .expect("the subscriber went on")
    .unwrap();
    let inbox = inbox_stats(&db.pool, &consumer).await.unwrap();
    assert_eq!((inbox.done, inbox.dead), (2, 1));
    let sql = "SELECT error FROM signals_inbox WHERE state = 'dead'";
    let error: String = with_db!(&db.pool, |pool| sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await)
    .unwrap();
    assert_eq!(error, "the handler timed out after 300ms");
    db.drop_schema().await;
    broker.delete().await;
}

/// The subscriber was down for two hours (its clock says so): the backlog's messages are older
/// than `max_age` (1 hour) when first tried. The age budget counts from this subscriber's
/// first try, so a message whose handler fails once is retried and applied, not dead on its
/// first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_after_an_outage_gets_its_retries() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
    place(&db, 130_000..130_003, true).await;
    broker.relay_until_idle(&db).await;
    let two_hours_later = signals_queue::Clock::system().now() + 2 * 3600 * 1000;
    tokio::time::timeout(
        Duration::from_secs(30),
        broker
            .subscriber(&db, &consumer)
            .clock(signals_queue::Clock::manual(two_hours_later))
            .build()
            .await
            .unwrap()
            .run_until_idle(),
    )
    .await
    .expect("the subscriber went idle")
    .unwrap();
    let inbox = inbox_stats(&db.pool, &consumer).await.unwrap();
    assert_eq!((inbox.done, inbox.dead), (3, 0), "retried, then applied");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM shipments WHERE order_id >= 130000")
            .await,
        3
    );
    db.drop_schema().await;
    broker.delete().await;
}

/// Errors that say "try again", not "this message is bad": a serialization failure raised by a
/// handler's statement, a deadlock reported at commit, and the subscriber's connection
/// terminated at commit. Each happens once, under `max_deliver(1)`: the message is applied
/// (the group is tried again, charged to no message), not dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_database_errors_are_not_the_messages_fault() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let cases = [
        (
            "a serialization failure in a handler's statement",
            "CREATE FUNCTION transient() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('transients') = 1 THEN
                     RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER transient BEFORE INSERT ON shipments
                 FOR EACH ROW EXECUTE FUNCTION transient();",
        ),
        (
            "a deadlock at commit",
            "CREATE FUNCTION transient() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('transients') = 1 THEN
                     RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER transient AFTER INSERT ON shipments
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION transient();",
        ),
        (
            "the connection terminated at commit",
            "CREATE FUNCTION transient() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('transients') = 1 THEN
                     PERFORM pg_terminate_backend(pg_backend_pid());
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER transient AFTER INSERT ON shipments
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION transient();",
        ),
    ];
    for (i, (case, trigger)) in cases.into_iter().enumerate() {
        // A stream of the case's own: its consumer sees only its message.
        let Some(broker) = Broker::connect().await else {
            return;
        };
        let order_id = 140_000 + i as i64;
        let consumer = format!("shipping_{}", uuid::Uuid::now_v7().simple());
        place(&db, [order_id], true).await;
        broker.relay_until_idle(&db).await;
        pg_execute(&db, &format!("CREATE SEQUENCE transients; {trigger}")).await;
        tokio::time::timeout(
            Duration::from_secs(30),
            broker
                .subscriber(&db, &consumer)
                .max_deliver(1)
                .build()
                .await
                .unwrap()
                .run_until_idle(),
        )
        .await
        .expect("the subscriber went idle")
        .unwrap();
        pg_execute(
            &db,
            "DROP TRIGGER transient ON shipments; DROP FUNCTION transient();
             DROP SEQUENCE transients;",
        )
        .await;
        let inbox = inbox_stats(&db.pool, &consumer).await.unwrap();
        assert_eq!((inbox.done, inbox.dead), (1, 0), "{case}");
        let applied = db
            .count("SELECT COUNT(*) FROM shipments WHERE order_id >= 140000")
            .await;
        assert_eq!(applied, i as i64 + 1, "{case}: applied once");
        broker.delete().await;
    }
    db.drop_schema().await;
}
