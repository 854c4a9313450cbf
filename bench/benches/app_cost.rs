//! What the queue costs the application, on PostgreSQL: 32 concurrent clients each place
//! orders, one transaction per request — the order row, `notify_async` of `OrderPlaced` with an
//! in-transaction handler (an audit row) and three queued handlers (an email, a webhook, a
//! published message), `COMMIT` — measured in requests per second and p99 latency.
//!
//! Variants, interleaved over `ROUNDS` rounds (default 3), `REQUESTS` requests each (default
//! 4,000), a fresh schema each:
//! - reference: the order and audit rows alone (no job);
//! - floor: the same transaction with the three job rows written by hand in one multi-row
//!   `INSERT` into a copy of the jobs table without the NOTIFY trigger;
//! - floor, with NOTIFY: the same `INSERT` into the jobs table itself (its trigger notifies);
//! - ours: `notify_async`, no worker running;
//! - ours with the worker in the same process at concurrency 64 (the email and webhook
//!   handlers each wait 5 ms, the email then writes a row; messages wait for a relay), and the
//!   time the worker then needs to drain the backlog once the clients stop;
//! - the last two again with the trigger's NOTIFY turned off for the application's connections
//!   (`-c signals.notify=off`); the worker then finds jobs by this process's own wake-ups
//!   (`listen(false)`) and polling;
//! - where the worker's cost goes, with NOTIFY on: the worker again with an email handler that
//!   writes nothing (no commit of its own: the completer completes it with the others), and the
//!   worker on a pool of its own whose connections do not wait for the WAL flush at commit
//!   (`synchronous_commit = off`: its claims, completions and email commits cost CPU, not
//!   fsyncs). For each worker variant the worker's statements per request are printed.
//!
//! ```text
//! cargo bench -p signals-bench --bench app_cost
//! ROUNDS=1 REQUESTS=100 cargo bench -p signals-bench --bench app_cost   # a smoke test
//! ```
//!
//! PostgreSQL is at `SIGNALS_BENCH_POSTGRES_URL`, else `SIGNALS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{
    with_db, AsyncJobScope, AsyncQueue, AsyncWorker, EnqueueAsync, FromJobAsync, Pool, Tx,
    WorkerStats,
};

mod common;

use common::{load, median, percentile, postgres_url, range, Order};

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

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct OrderPlaced(Order);

#[on(OrderPlaced, priority = 10)]
async fn audit(sig: &OrderPlaced, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO audit (order_id, entry) VALUES ($1, 'placed')";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.0.order_id)
        .execute(conn)
        .await
        .map(drop))
}

/// The email handler writes nothing (the `Variant::NoEmailWrites` runs).
static NO_EMAIL_WRITES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[on(OrderPlaced, queue = "email")]
async fn send_email(sig: &OrderPlaced, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if NO_EMAIL_WRITES.load(Ordering::Relaxed) {
        return Ok(());
    }
    let sql = "INSERT INTO emails (order_id) VALUES ($1)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.0.order_id)
        .execute(conn)
        .await
        .map(drop))
}

#[on(OrderPlaced, queue = "webhooks")]
async fn call_webhook(_: &OrderPlaced, _: &mut Ctx<'_>) {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[derive(Serialize)]
struct OrderPlacedMessage {
    order_id: i64,
}

#[on(OrderPlaced, publish = "shop.orders.placed")]
fn order_placed_message(sig: &OrderPlaced) -> OrderPlacedMessage {
    OrderPlacedMessage {
        order_id: sig.0.order_id,
    }
}

/// The three rows `notify_async` writes, by hand, in one statement (schema 4: the JSON as text
/// in `body`, the jobs `available`).
const HAND_JOBS: &str = "
INSERT INTO {table} (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at)
VALUES ($1::uuid, 'app_cost::OrderPlaced', 'app_cost::send_email', 'email', 0, $2, 'available', 25, $4, $4),
       ($1::uuid, 'app_cost::OrderPlaced', 'app_cost::call_webhook', 'webhooks', 0, $2, 'available', 25, $4, $4),
       ($1::uuid, 'app_cost::OrderPlaced', 'app_cost::order_placed_message', 'shop.orders.placed', 0, $3, 'available', 25, $4, $4)";

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Reference,
    Floor,
    FloorNotify,
    Ours,
    OursWithWorker,
    Quiet,
    QuietWithWorker,
    /// The worker, with an email handler that writes nothing.
    NoEmailWrites,
    /// The worker on a pool of its own with `synchronous_commit = off`.
    NoFlushWait,
}

impl Variant {
    fn ours(self) -> bool {
        matches!(
            self,
            Variant::Ours
                | Variant::OursWithWorker
                | Variant::Quiet
                | Variant::QuietWithWorker
                | Variant::NoEmailWrites
                | Variant::NoFlushWait
        )
    }

    fn worker(self) -> bool {
        matches!(
            self,
            Variant::OursWithWorker
                | Variant::QuietWithWorker
                | Variant::NoEmailWrites
                | Variant::NoFlushWait
        )
    }

    fn quiet(self) -> bool {
        matches!(self, Variant::Quiet | Variant::QuietWithWorker)
    }
}

const VARIANTS: [(&str, Variant); 9] = [
    ("reference: order + audit rows, no job", Variant::Reference),
    (
        "floor: + 3 job rows by hand, one INSERT, no NOTIFY",
        Variant::Floor,
    ),
    (
        "floor: + 3 job rows by hand, one INSERT, NOTIFY trigger",
        Variant::FloorNotify,
    ),
    ("ours: `notify_async`, no worker", Variant::Ours),
    (
        "ours: `notify_async`, worker in process at concurrency 64",
        Variant::OursWithWorker,
    ),
    (
        "ours, NOTIFY off: `notify_async`, no worker",
        Variant::Quiet,
    ),
    (
        "ours, NOTIFY off: worker in process at concurrency 64, no LISTEN",
        Variant::QuietWithWorker,
    ),
    (
        "ours: worker at concurrency 64, the email handler writes nothing",
        Variant::NoEmailWrites,
    ),
    (
        "ours: worker at concurrency 64 on its own pool, `synchronous_commit = off`",
        Variant::NoFlushWait,
    ),
];

const CLIENTS: usize = 32;

/// One request, as the variant places it.
async fn request(pool: &Pool, variant: Variant, id: i64) {
    let order = Order::new(id);
    let mut tx = pool.begin().await.expect("begin");
    let Tx::Postgres(conn) = tx.tx() else {
        unreachable!("PostgreSQL only")
    };
    sqlx::query(
        "INSERT INTO orders (id, customer, amount_cents, currency) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(&order.customer)
    .bind(order.amount_cents)
    .bind(&order.currency)
    .execute(&mut *conn)
    .await
    .expect("order");
    match variant {
        ours if ours.ours() => {
            notify_async(&OrderPlaced(order), &mut Ctx { tx: tx.tx() })
                .await
                .expect("notify");
        }
        _ => {
            sqlx::query("INSERT INTO audit (order_id, entry) VALUES ($1, 'placed')")
                .bind(id)
                .execute(&mut *conn)
                .await
                .expect("audit");
            if variant != Variant::Reference {
                let table = match variant {
                    Variant::Floor => "hand_jobs",
                    _ => "signals_jobs",
                };
                let sql = HAND_JOBS.replace("{table}", table);
                let payload = serde_json::to_string(&order).expect("json");
                let message = format!(r#"{{"order_id":{id}}}"#);
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(true)
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(payload)
                    .bind(message)
                    .bind(common::now_ms())
                    .execute(&mut *conn)
                    .await
                    .expect("jobs");
            }
        }
    }
    tx.commit().await.expect("commit");
}

/// One run: requests/s, p99 ms, drain seconds after the load for the worker variant, the
/// worker's statistics.
type Run = (f64, f64, f64, Option<WorkerStats>);

/// One run of `variant`.
async fn run(variant: Variant, requests: usize) -> Run {
    NO_EMAIL_WRITES.store(variant == Variant::NoEmailWrites, Ordering::SeqCst);
    let schema = format!("app_cost_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&postgres_url())
        .await
        .expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("schema");
    let quiet = match variant.quiet() {
        true => "%20-c%20signals.notify%3Doff",
        false => "",
    };
    let url = format!(
        "{}?options=-c%20search_path%3D{schema}{quiet}",
        postgres_url()
    );
    let pool = Pool::connect(&url, CLIENTS as u32 + 2).await.expect("pool");
    AsyncQueue::new(pool.clone())
        .migrate()
        .await
        .expect("migrate");
    with_db!(&pool, |pool| sqlx::raw_sql(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount_cents BIGINT NOT NULL, currency TEXT NOT NULL);
         CREATE TABLE audit (order_id BIGINT NOT NULL, entry TEXT NOT NULL);
         CREATE TABLE emails (order_id BIGINT NOT NULL);
         CREATE TABLE hand_jobs (LIKE signals_jobs INCLUDING ALL);"
    )
    .execute(pool)
    .await
    .map(drop))
    .expect("tables");
    let worker_pool = match variant {
        Variant::NoFlushWait => {
            let url = format!("{url}%20-c%20synchronous_commit%3Doff");
            Pool::connect(&url, CLIENTS as u32 + 2).await.expect("pool")
        }
        _ => pool.clone(),
    };
    let worker = match variant.worker() {
        true => Some(
            AsyncWorker::builder(worker_pool.clone())
                .concurrency(64)
                .listen(!variant.quiet())
                .poll_interval(Duration::from_millis(100))
                .build()
                .await
                .expect("worker")
                .start(),
        ),
        false => None,
    };
    let next = Arc::new(AtomicUsize::new(1));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (pool, next) = (pool.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id > requests {
                        return latencies;
                    }
                    let sent = Instant::now();
                    request(&pool, variant, id as i64).await;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for client in clients {
        latencies.extend(client.await.expect("client"));
    }
    let elapsed = start.elapsed();
    let (drained, stats) = match worker {
        Some(worker) => {
            let stopped = Instant::now();
            worker.wait_idle().await.expect("idle");
            let drained = stopped.elapsed().as_secs_f64();
            let stats = worker.stats();
            worker
                .shutdown(Duration::from_secs(10))
                .await
                .expect("shutdown");
            (drained, Some(stats))
        }
        None => (0.0, None),
    };
    if variant.worker() && variant != Variant::NoEmailWrites {
        let emails: i64 = with_db!(&pool, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM emails"
        )
        .fetch_one(pool)
        .await)
        .expect("count");
        assert_eq!(emails, requests as i64, "the backlog drained");
    }
    with_db!(&pool, |pool| pool.close().await);
    with_db!(&worker_pool, |pool| pool.close().await);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .expect("drop");
    admin.close().await;
    (
        requests as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.99),
        drained,
        stats,
    )
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("app_cost benchmark: run it with `cargo bench -p signals-bench --bench app_cost`");
        return;
    }
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, requests) = (var("ROUNDS", 3), var("REQUESTS", 4_000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("# What the queue costs the application (PostgreSQL, {CLIENTS} clients)\n");
        println!("{rounds} rounds of {requests} requests, interleaved; load at start: {}\n", load());
        let mut results: Vec<Vec<Run>> = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            let order: Vec<usize> = match round % 2 {
                0 => (0..VARIANTS.len()).collect(),
                _ => (0..VARIANTS.len()).rev().collect(),
            };
            for v in order {
                results[v].push(run(VARIANTS[v].1, requests).await);
            }
            eprintln!("  round {} of {rounds} done (load {})", round + 1, load());
        }
        let rate = |v: usize| median(&results[v].iter().map(|r| r.0).collect::<Vec<_>>());
        println!("| variant | requests/s (median) | rounds min–max | p99 ms | vs floor | vs ours, no worker |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (v, (name, _)) in VARIANTS.iter().enumerate() {
            let rates: Vec<f64> = results[v].iter().map(|r| r.0).collect();
            let p99s: Vec<f64> = results[v].iter().map(|r| r.1).collect();
            let (min, max) = range(&rates);
            println!(
                "| {name} | {:.0} | {min:.0}–{max:.0} | {:.1} | {:.2}× | {:.2}× |",
                rate(v),
                median(&p99s),
                rate(1) / rate(v),
                rate(v) / rate(3),
            );
        }
        println!("\nThe worker's statements per request (median over rounds; the worker runs the email and the webhook: two jobs a request):\n");
        println!("| variant | with / without worker (same NOTIFY) | claims | jobs per claim | completer flushes | jobs completed in their own transaction |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for v in [4, 6, 7, 8] {
            let per = |f: fn(&WorkerStats) -> u64| {
                median(
                    &results[v]
                        .iter()
                        .filter_map(|r| r.3.as_ref())
                        .map(|stats| f(stats) as f64 / requests as f64)
                        .collect::<Vec<_>>(),
                )
            };
            let without = if v == 6 { 5 } else { 3 };
            println!(
                "| {} | {:.2}× | {:.3} | {:.1} | {:.3} | {:.3} |",
                VARIANTS[v].0,
                rate(v) / rate(without),
                per(|s| s.fetches),
                per(|s| s.claimed) / per(|s| s.fetches),
                per(|s| s.flushes),
                per(|s| s.completed_with_writes),
            );
        }
        for v in [4, 6] {
            let drains: Vec<f64> = results[v].iter().map(|r| r.2).collect();
            println!(
                "\n{}: the worker drained the backlog left when the clients stopped in {:.2} s (median; {:.2}–{:.2}).",
                VARIANTS[v].0,
                median(&drains),
                range(&drains).0,
                range(&drains).1
            );
        }
        println!("\n`vs floor`: the floor's throughput over this one's (cost, > 1 is slower).");
        println!("load at end: {}", load());
    });
}
