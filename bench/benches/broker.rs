//! The broker rung against a local NATS JetStream and PostgreSQL, each figure next to its floors
//! measured in the same run (rounds interleave the variants; fresh schema and stream each time):
//!
//! 1. relay: publishing N outbox messages with `Relay` (claim, publish with acks in flight, mark
//!    done after the PubAck), against raw pipelined publishing of the same messages with
//!    async-nats (256 acks in flight) and against the queue's own drain of N noop jobs on the
//!    same store (the relay must not be the bottleneck);
//! 2. consumer: `Subscriber` applying N messages (inbox row + a handler's row + commit + ack),
//!    next to the queue's drain;
//! 3. end to end: commit in the producer → handler start in the consumer, at 200 commits/s.
//!
//! ```text
//! cargo bench -p signals-bench --bench broker
//! ROUNDS=1 JOBS=5000 cargo bench -p signals-bench --bench broker
//! ```
//!
//! PostgreSQL at `SIGNALS_BENCH_POSTGRES_URL`, NATS at `SIGNALS_BENCH_NATS_URL` (else the tests'
//! `SIGNALS_TEST_POSTGRES_URL` and `SIGNALS_TEST_NATS_URL`; defaults: this machine's). Sizes:
//! `ROUNDS` (3), `JOBS` messages (20,000), `SECONDS` of the end-to-end run (5). Runs only under
//! `cargo bench`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use signals_broker::{ensure_stream, Relay, Subscriber};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{AsyncJobScope, AsyncQueue, AsyncWorker, EnqueueAsync, FromJobAsync, Pool, Tx};

mod common;
use common::{load, nats_url, percentile, postgres_url};

struct Ctx<'a> {
    tx: Tx<'a>,
}

impl EnqueueAsync for Ctx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for Ctx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        Ok(Ctx {
            tx: job.transaction(),
        })
    }
}

/// The producer's event.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
}

/// The thin message.
#[derive(Serialize)]
struct OrderPlacedMessage {
    order_id: i64,
}

#[on(OrderPlaced, publish = "bench.orders.placed")]
fn order_placed_message(sig: &OrderPlaced) -> OrderPlacedMessage {
    OrderPlacedMessage {
        order_id: sig.order_id,
    }
}

/// The queue's drain floor: the same event, a noop queued handler.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Noop {
    order_id: i64,
}

static NOOPS: AtomicUsize = AtomicUsize::new(0);

#[on(Noop, queue, name = "bench.broker.noop")]
fn noop(sig: &Noop, _: &mut Ctx<'_>) {
    black_box(sig);
    NOOPS.fetch_add(1, Ordering::Relaxed);
}

/// The consumer's signal.
#[derive(Signal, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct OrderPlacedReceived {
    order_id: i64,
}

static APPLIED: AtomicUsize = AtomicUsize::new(0);
/// When each handler started, in ns since the bench's origin, by order id.
static STARTS: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());

#[on(OrderPlacedReceived)]
async fn ship(sig: &OrderPlacedReceived, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    STARTS.lock().unwrap().push((sig.order_id, since_origin()));
    let Tx::Postgres(conn) = ctx.tx.reborrow() else {
        unreachable!("PostgreSQL only")
    };
    sqlx::query("INSERT INTO shipments (order_id) VALUES ($1)")
        .bind(sig.order_id)
        .execute(conn)
        .await?;
    APPLIED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn since_origin() -> i64 {
    origin().elapsed().as_nanos() as i64
}

/// A schema and a stream of one run's own, dropped with it.
struct Env {
    pool: Pool,
    admin: sqlx::PgPool,
    schema: String,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    prefix: String,
}

impl Env {
    async fn fresh() -> Env {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let postgres = postgres_url();
        let schema = format!("signals_bench_{id}");
        let admin = sqlx::PgPool::connect(&postgres).await.expect("postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("schema");
        let pool = Pool::connect(
            &format!("{postgres}?options=-c%20search_path%3D{schema}"),
            8,
        )
        .await
        .expect("pool");
        AsyncQueue::new(pool.clone())
            .migrate()
            .await
            .expect("migrate");
        let Pool::Postgres(pg) = &pool else {
            unreachable!()
        };
        sqlx::raw_sql("CREATE TABLE shipments (order_id BIGINT NOT NULL)")
            .execute(pg)
            .await
            .expect("shipments");
        let client = async_nats::connect(nats_url()).await.expect("nats");
        let js = jetstream::new(client.clone());
        let (stream, prefix) = (format!("BENCH_{id}"), format!("b{id}."));
        ensure_stream(&js, &stream, &[&format!("{prefix}>")])
            .await
            .expect("stream");
        Env {
            pool,
            admin,
            schema,
            client,
            js,
            stream,
            prefix,
        }
    }

    async fn drop(self) {
        let _ = self.js.delete_stream(&self.stream).await;
        let Pool::Postgres(pool) = self.pool else {
            unreachable!()
        };
        pool.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .expect("drop schema");
    }

    /// A relay from this outbox to this stream's subjects, with the default settings.
    async fn relay(&self) -> Relay {
        Relay::builder(self.pool.clone(), self.client.clone())
            .subject_prefix(&self.prefix)
            .build()
            .await
            .expect("relay")
    }

    /// `n` orders, each notified, all in one transaction.
    async fn outbox(&self, n: usize) {
        let mut tx = self.pool.begin().await.expect("begin");
        for order_id in 0..n as i64 {
            let signal = OrderPlaced {
                order_id,
                customer: format!("customer-{order_id:08}@example.com"),
            };
            notify_async(&signal, &mut Ctx { tx: tx.tx() })
                .await
                .expect("notify");
        }
        tx.commit().await.expect("commit");
    }
}

/// Messages/s of raw pipelined publishing: the same JSON, `Nats-Msg-Id` set, 256 acks in flight.
async fn raw_publish(n: usize) -> f64 {
    let env = Env::fresh().await;
    let subject = format!("{}bench.orders.placed", env.prefix);
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::with_capacity(256);
    for order_id in 0..n as i64 {
        let payload = serde_json::to_vec(&OrderPlacedMessage { order_id }).expect("json");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("raw:{order_id}").as_str(),
        );
        let ack = env
            .js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .expect("publish");
        in_flight.push_back(ack);
        if in_flight.len() == 256 {
            in_flight.pop_front().unwrap().await.expect("ack");
        }
    }
    for ack in in_flight {
        ack.await.expect("ack");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    env.drop().await;
    rate
}

/// Messages/s of `Relay` over an outbox of `n`.
async fn relay(n: usize) -> f64 {
    let env = Env::fresh().await;
    env.outbox(n).await;
    let relay = env.relay().await;
    let start = Instant::now();
    relay.run_until_idle().await.expect("relay");
    let rate = n as f64 / start.elapsed().as_secs_f64();
    env.drop().await;
    rate
}

/// Jobs/s of the queue's drain of `n` noop jobs on the same store (4 workers, defaults).
async fn drain(n: usize) -> f64 {
    let env = Env::fresh().await;
    let mut tx = env.pool.begin().await.expect("begin");
    for order_id in 0..n as i64 {
        notify_async(&Noop { order_id }, &mut Ctx { tx: tx.tx() })
            .await
            .expect("notify");
    }
    tx.commit().await.expect("commit");
    NOOPS.store(0, Ordering::SeqCst);
    let start = Instant::now();
    AsyncWorker::builder(env.pool.clone())
        .concurrency(4)
        .build()
        .await
        .expect("worker")
        .run_until_idle()
        .await
        .expect("drain");
    let rate = n as f64 / start.elapsed().as_secs_f64();
    env.drop().await;
    rate
}

/// Messages/s of `Subscriber` over `n` messages already in the stream.
async fn consume(n: usize) -> f64 {
    let env = Env::fresh().await;
    env.outbox(n).await;
    env.relay().await.run_until_idle().await.expect("relay");
    APPLIED.store(0, Ordering::SeqCst);
    let subscriber = Subscriber::<OrderPlacedReceived>::builder(
        env.pool.clone(),
        env.client.clone(),
        &env.stream,
        "bench",
        format!("{}bench.orders.placed", env.prefix),
    )
    .batch(256)
    .build()
    .await
    .expect("subscriber");
    let start = Instant::now();
    subscriber.run_until_idle().await.expect("consume");
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(APPLIED.load(Ordering::SeqCst), n);
    env.drop().await;
    rate
}

/// Latencies in ms, producer commit → consumer handler start, at `rate` commits/s.
async fn end_to_end(seconds: f64, rate: f64) -> Vec<f64> {
    let env = Env::fresh().await;
    STARTS.lock().unwrap().clear();
    let relay = env.relay().await.start();
    let subscriber = Subscriber::<OrderPlacedReceived>::builder(
        env.pool.clone(),
        env.client.clone(),
        &env.stream,
        "bench",
        format!("{}bench.orders.placed", env.prefix),
    )
    .build()
    .await
    .expect("subscriber");
    let stop = subscriber.stopper();
    let consuming = tokio::spawn(subscriber.run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = (seconds * rate) as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut committed = Vec::with_capacity(count);
    let mut next = Instant::now();
    for order_id in 0..count as i64 {
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
        next += every;
        let mut tx = env.pool.begin().await.expect("begin");
        let signal = OrderPlaced {
            order_id,
            customer: "c@example.com".into(),
        };
        notify_async(&signal, &mut Ctx { tx: tx.tx() })
            .await
            .expect("notify");
        tx.commit().await.expect("commit");
        committed.push(since_origin());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while STARTS.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = consuming.await;
    relay.shutdown(Duration::from_secs(5)).await;
    env.drop().await;
    let starts: std::collections::HashMap<i64, i64> =
        STARTS.lock().unwrap().iter().copied().collect();
    (0..count)
        .map(|id| (starts[&(id as i64)] - committed[id]) as f64 / 1e6)
        .collect()
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("broker benchmark: run it with `cargo bench -p signals-bench --bench broker`");
        return;
    }
    origin();
    let var = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let rounds = var("ROUNDS", 3.0) as usize;
    let jobs = var("JOBS", 20_000.0) as usize;
    let seconds = var("SECONDS", 5.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("# Broker benchmark (PostgreSQL outbox, NATS JetStream, file storage)\n");
        println!("{rounds} rounds, interleaved, {jobs} messages; load average at start: {}\n", load());
        let names = [
            "floor: raw pipelined publish (async-nats, 256 acks in flight)",
            "floor: the queue's drain on the same store (AsyncWorker, 4 × 16)",
            "Relay: outbox → JetStream, done after PubAck",
            "Subscriber: inbox + handler row + commit + ack",
        ];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for round in 0..rounds {
            let order: Vec<usize> = match round % 2 {
                0 => (0..names.len()).collect(),
                _ => (0..names.len()).rev().collect(),
            };
            for v in order {
                let rate = match v {
                    0 => raw_publish(jobs).await,
                    1 => drain(jobs).await,
                    2 => relay(jobs).await,
                    _ => consume(jobs).await,
                };
                rates[v].push(rate);
            }
            eprintln!("  round {} of {rounds} done (load {})", round + 1, load());
        }
        let median = |v: &[f64]| percentile(v, 0.5);
        let floor = median(&rates[0]).min(median(&rates[1]));
        println!("| variant | k msgs/s (median) | rounds | vs the smaller floor |");
        println!("| --- | ---: | ---: | ---: |");
        for (name, rates) in names.iter().zip(&rates) {
            let list: Vec<String> = rates.iter().map(|r| format!("{:.1}", r / 1e3)).collect();
            println!(
                "| {name} | {:.1} | {} | {:.2}× |",
                median(rates) / 1e3,
                list.join(" / "),
                median(rates) / floor
            );
        }
        println!("\n## End to end: producer commit → consumer handler start, 200 commits/s for {seconds} s\n");
        println!("| round | p50 ms | p99 ms | max ms |");
        println!("| --- | ---: | ---: | ---: |");
        for round in 0..rounds {
            let latencies = end_to_end(seconds, 200.0).await;
            println!(
                "| {} | {:.2} | {:.2} | {:.2} |",
                round + 1,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0)
            );
        }
        println!("\nload average at end: {}", load());
    });
}
