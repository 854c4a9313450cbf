//! The queue rung's async path (sqlx): PostgreSQL, and SQLite through sqlx, each figure next to
//! a plain-SQL floor measured in the same run. Rounds interleave every variant (in alternating
//! order); each variant gets a fresh schema (PostgreSQL) or file (SQLite); tables give the
//! median over rounds.
//!
//! 1. enqueue: a transaction that inserts a domain row and a job row, by hand or with
//!    `notify_async`;
//! 2. drain: noop jobs, by hand-written claim loops and by `signals_queue::AsyncWorker`;
//! 3. latency: commit returned → handler started at ~500 commits/s, with LISTEN/NOTIFY and with
//!    polling alone (PostgreSQL);
//! 4. a long read transaction: the drain again while another connection holds a snapshot open
//!    (it pins the xmin horizon, so dead job rows cannot be cleaned up) (PostgreSQL);
//! 5. writing drain: the drain with a handler that writes one row through its transaction
//!    (PostgreSQL);
//! 6. done counter: the writing drain with and without the done counter's upsert in each
//!    job's completion, by hand and with `AsyncWorker` (PostgreSQL).
//!
//! ```text
//! cargo bench -p signals-bench --bench queue_async                 # every section, 3 rounds
//! cargo bench -p signals-bench --bench queue_async -- drain        # one section
//! ROUNDS=1 JOBS=5000 cargo bench -p signals-bench --bench queue_async
//! ROUNDS=1 JOBS=200 ENQUEUE_JOBS=50 SECONDS=0.5 cargo bench -p signals-bench --bench queue_async
//! ```
//!
//! Sections: `enqueue`, `drain`, `latency`, `writing-drain`, `done-counter`, `long-read`.
//! Sizes: `ROUNDS` (3), `JOBS` per drain (20,000), `ENQUEUE_JOBS` (3,000), `SECONDS` of
//! latency measurement (5). PostgreSQL is at `SIGNALS_BENCH_POSTGRES_URL`, else
//! `SIGNALS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`). The program
//! runs only under `cargo bench`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};

mod common;
use common::{
    load, lock, median, now_ms, origin, percentile, postgres_url, range, since_origin, Order,
};
use signals_queue::{
    with_db, AsyncJobScope, AsyncQueue, AsyncWorker, EnqueueAsync, FromJobAsync, Pool, Transaction,
    Tx,
};

// ---------------------------------------------------------------------------------------------
// The application: a context, two signals, one queued handler each.

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

static NOOPS: AtomicUsize = AtomicUsize::new(0);

/// Whether the drain's handler (and the floors) write one row per job through the job's
/// transaction ("writing" drains); otherwise the handler is a noop.
static WRITES: AtomicBool = AtomicBool::new(false);

#[on(OrderPlaced, queue, name = "bench.noop")]
async fn noop(sig: &OrderPlaced, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    black_box(sig);
    if WRITES.load(Ordering::Relaxed) {
        let sql = "INSERT INTO written (order_id) VALUES ($1)";
        with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
            .bind(sig.0.order_id)
            .execute(conn)
            .await
            .map(drop))?;
    }
    NOOPS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Ping {
    seq: usize,
}

/// `seq` → handler start, in ns since [`origin`].
static STARTS: Mutex<Vec<(usize, i64)>> = Mutex::new(Vec::new());

#[on(Ping, queue, name = "bench.latency")]
fn record_start(sig: &Ping, _: &mut Ctx<'_>) {
    let started = since_origin(Instant::now());
    lock(&STARTS).push((sig.seq, started));
}

// ---------------------------------------------------------------------------------------------
// The databases.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Postgres,
    Sqlite,
}

/// A fresh schema (PostgreSQL) or file (SQLite) with the jobs table and the orders table,
/// dropped with it.
struct Db {
    pool: Pool,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn fresh(store: Store, connections: u32) -> Db {
        let db = match store {
            Store::Postgres => {
                let schema = format!("signals_bench_{}", uuid::Uuid::now_v7().simple());
                let admin = sqlx::PgPool::connect(&postgres_url())
                    .await
                    .expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&admin)
                    .await
                    .expect("schema");
                admin.close().await;
                let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
                Db {
                    pool: Pool::connect(&url, connections).await.expect("pool"),
                    schema: Some(schema),
                    _dir: None,
                }
            }
            Store::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Db {
                    pool: Pool::connect(&url, connections).await.expect("pool"),
                    schema: None,
                    _dir: Some(dir),
                }
            }
        };
        AsyncQueue::new(db.pool.clone())
            .migrate()
            .await
            .expect("migrate");
        let orders = match store {
            Store::Postgres => "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount_cents BIGINT NOT NULL, currency TEXT NOT NULL)",
            Store::Sqlite => "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount_cents INTEGER NOT NULL, currency TEXT NOT NULL)",
        };
        db.raw(orders).await;
        db.raw("CREATE TABLE written (order_id BIGINT NOT NULL)")
            .await;
        db
    }

    async fn raw(&self, sql: &'static str) {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Pool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            _ => unreachable!(),
        }
        .expect("statement");
    }

    async fn count(&self, sql: &'static str) -> i64 {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            _ => unreachable!(),
        }
        .expect("count")
    }

    async fn drop(self) {
        if let Some(schema) = &self.schema {
            let Pool::Postgres(pool) = &self.pool else {
                unreachable!()
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(pool)
                .await
                .expect("drop schema");
        }
        match self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
            _ => unreachable!(),
        }
    }

    /// `jobs` pending noop jobs, written with `notify_async` in one transaction.
    async fn backlog(&self, jobs: usize) {
        let mut tx = self.pool.begin().await.expect("begin");
        for id in 1..=jobs as i64 {
            notify_async(&OrderPlaced(Order::new(id)), &mut Ctx { tx: tx.tx() })
                .await
                .expect("notify");
        }
        tx.commit().await.expect("commit");
    }
}

/// Runs `$body` with `$conn` the connection `$tx` holds, and `$sql` the SQL of its store.
macro_rules! on_conn {
    ($tx:expr, |$conn:ident, $sql:ident| $body:expr) => {
        match $tx {
            Tx::Postgres($conn) => {
                #[allow(unused_imports)]
                use pg as $sql;
                $body
            }
            Tx::Sqlite($conn) => {
                #[allow(unused_imports)]
                use lite as $sql;
                $body
            }
            _ => unreachable!(),
        }
    };
}

/// The statements of the hand-written floors, copied from `signals_queue` (PostgreSQL, schema
/// 4: due jobs are `available`, the JSON is in `body`). The floors keep a lease per job (`$1`)
/// where the library keeps one per worker, and complete without the done counter, as a minimal
/// queue would; [`COMPLETE_COUNTED`](pg::COMPLETE_COUNTED) is the library's completion with it.
mod pg {
    /// The handlers the floors claim for, as the library's claim takes them.
    pub const HANDLERS: &str = r#"[{"name":"bench.latency","signal":"Ping"},{"name":"bench.noop","signal":"OrderPlaced"}]"#;
    pub const INSERT_ORDER: &str =
        "INSERT INTO orders (id, customer, amount_cents, currency) VALUES ($1, $2, $3, $4)";
    pub const ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at)
VALUES ($1::uuid, $2, $3, $4, $5, $6, 'available', $7, $8, $8)";
    pub const CLAIM: &str = "
WITH next AS MATERIALIZED (
    SELECT job.id FROM jsonb_to_recordset($4::jsonb) AS h (name TEXT, signal TEXT)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM signals_jobs
        WHERE state = 'available' AND handler = h.name
          AND (signal = h.signal OR right(signal, length(h.signal) + 2) = '::' || h.signal)
          AND crashes = 0 AND run_at <= $3
        ORDER BY priority DESC, run_at, id
        LIMIT $5
        FOR UPDATE SKIP LOCKED) AS job
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT $5)
UPDATE signals_jobs AS job
SET state = 'running', attempt = job.attempt + 1, lease_until = $1, token = $2
FROM next WHERE job.id = next.id
RETURNING job.id, COALESCE(job.body, job.payload::text)";
    pub const COMPLETE: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = $1, lease_until = NULL
WHERE id = $2 AND token = $3 AND state = 'running'";
    /// The library's `COMPLETE` (schema 5): [`COMPLETE`], the row marked as counted, and the
    /// done counter's upsert (a shard by job id) in one statement.
    pub const COMPLETE_COUNTED: &str = "
WITH done AS (
    UPDATE signals_jobs SET state = 'done', finished_at = $1, lease_until = NULL, counted = true
    WHERE id = $2 AND token = $3 AND state = 'running'
    RETURNING handler, id)
INSERT INTO signals_job_counts (handler, shard, done)
SELECT handler, (id % 16)::INT, 1 FROM done
ON CONFLICT (handler, shard) DO UPDATE SET done = signals_job_counts.done + 1";
    pub const COMPLETE_MANY: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = $1, lease_until = NULL
WHERE id = ANY($2) AND token = $3 AND state = 'running'";
    /// Spreads the done counts in this schema: a `BEFORE INSERT` trigger gives every row the
    /// completions upsert a shard of its own, so the upsert (`INSERT ... ON CONFLICT DO
    /// UPDATE`) never meets an existing row: it inserts one small row and waits for no other
    /// transaction's counter row. The library's statements are unchanged (and still affect
    /// one row, which the worker checks: a trigger that dropped the row would make every
    /// completion look like a lost claim).
    pub const SPREAD_DONE_COUNTS: &str = "
CREATE SEQUENCE bench_shards;
CREATE FUNCTION bench_own_shard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.shard := nextval('bench_shards'); RETURN NEW; END $$;
CREATE TRIGGER bench_spread_done_counts BEFORE INSERT ON signals_job_counts
    FOR EACH ROW EXECUTE FUNCTION bench_own_shard()";
}

/// The same on SQLite.
mod lite {
    pub const HANDLERS: &str = r#"["bench.latency","bench.noop"]"#;
    pub const INSERT_ORDER: &str =
        "INSERT INTO orders (id, customer, amount_cents, currency) VALUES (?1, ?2, ?3, ?4)";
    pub const ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";
    pub const CLAIM: &str = "
UPDATE signals_jobs
SET state = 'running', attempt = attempt + 1, lease_until = ?1, token = ?2
WHERE id IN (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ?3
      AND handler IN (SELECT value FROM json_each(?4))
    ORDER BY priority DESC, run_at, id
    LIMIT +?5)
RETURNING id, payload";
    pub const COMPLETE: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = ?1, lease_until = NULL
WHERE id = ?2 AND token = ?3 AND state = 'running'";
}

async fn insert_order(tx: Tx<'_>, order: &Order) {
    on_conn!(tx, |conn, sql| sqlx::query(sql::INSERT_ORDER)
        .bind(order.order_id)
        .bind(&order.customer)
        .bind(order.amount_cents)
        .bind(&order.currency)
        .execute(conn)
        .await
        .map(drop))
    .expect("insert order");
}

// ---------------------------------------------------------------------------------------------
// 1. Enqueue.

#[derive(Clone, Copy)]
enum Place {
    /// The domain row and the job row by hand (a UUIDv7 and the JSON payload too).
    ByHand,
    /// The domain row, then `notify_async` writes the job row.
    Notify,
    /// The domain row alone.
    DomainOnly,
}

async fn place(tx: &mut Transaction, order: Order, how: Place) {
    insert_order(tx.tx(), &order).await;
    match how {
        Place::ByHand => {
            let payload = serde_json::to_string(&OrderPlaced(order)).expect("json");
            on_conn!(tx.tx(), |conn, sql| sqlx::query(sql::ENQUEUE)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind("queue_async::OrderPlaced")
                .bind("bench.noop")
                .bind("default")
                .bind(0)
                .bind(&payload)
                .bind(25)
                .bind(now_ms())
                .execute(conn)
                .await
                .map(drop))
            .expect("insert job");
        }
        Place::Notify => notify_async(&OrderPlaced(order), &mut Ctx { tx: tx.tx() })
            .await
            .expect("notify"),
        Place::DomainOnly => {}
    }
}

async fn enqueue_rate(store: Store, jobs: usize, how: Place) -> f64 {
    let db = Db::fresh(store, 2).await;
    let start = Instant::now();
    for id in 1..=jobs as i64 {
        let mut tx = db.pool.begin().await.expect("begin");
        place(&mut tx, Order::new(id), how).await;
        tx.commit().await.expect("commit");
    }
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, jobs as i64);
    db.drop().await;
    rate
}

// ---------------------------------------------------------------------------------------------
// 2. Drain.

#[derive(Clone, Copy)]
enum Completion {
    /// One transaction per job.
    EachJob,
    /// One transaction per job, completed as the library completes it: with the done
    /// counter's upsert in the same statement (PostgreSQL).
    EachJobCounted,
    /// One transaction per claimed batch, one completion statement for it (PostgreSQL).
    OneStatement,
    /// One transaction per batch, each job in a savepoint.
    SavepointPerJob,
}

#[derive(Clone, Copy)]
enum Drainer {
    /// `tasks` hand-written loops claiming `limit` at a time.
    ByHand {
        tasks: usize,
        limit: usize,
        completion: Completion,
    },
    /// `AsyncWorker` with `concurrency` slots (its fetches claim for free slots); with
    /// `spread_counts`, each completion counts itself in a row of its own
    /// ([`pg::SPREAD_DONE_COUNTS`]), so that none waits for another's counter row.
    Worker {
        concurrency: usize,
        spread_counts: bool,
        /// `AsyncWorkerBuilder::fetch_ahead`, if not the default.
        ahead: Option<usize>,
    },
}

async fn drain_by_hand(pool: Pool, limit: usize, completion: Completion) {
    loop {
        let token = fastrand::i64(1..i64::MAX);
        let now = now_ms();
        let mut conn = pool.begin().await.expect("begin");
        let jobs: Vec<(i64, String)> = on_conn!(conn.tx(), |c, sql| sqlx::query_as(sql::CLAIM)
            .bind(now + 30_000)
            .bind(token)
            .bind(now)
            .bind(sql::HANDLERS)
            .bind(limit as i64)
            .fetch_all(c)
            .await)
        .expect("claim");
        conn.commit().await.expect("commit claim");
        if jobs.is_empty() {
            return;
        }
        match completion {
            Completion::EachJob | Completion::EachJobCounted => {
                let counted = matches!(completion, Completion::EachJobCounted);
                for job in &jobs {
                    let mut tx = pool.begin().await.expect("begin");
                    complete(&mut tx, job, token, counted).await;
                    tx.commit().await.expect("commit");
                }
            }
            Completion::OneStatement => {
                let ids: Vec<i64> = jobs.iter().map(|job| black_box(job).0).collect();
                let mut tx = pool.begin().await.expect("begin");
                let Tx::Postgres(c) = tx.tx() else {
                    unreachable!()
                };
                sqlx::query(pg::COMPLETE_MANY)
                    .bind(now_ms())
                    .bind(&ids)
                    .bind(token)
                    .execute(c)
                    .await
                    .expect("complete");
                tx.commit().await.expect("commit");
            }
            Completion::SavepointPerJob => {
                let mut tx = pool.begin().await.expect("begin");
                for job in &jobs {
                    savepoint(&mut tx, "SAVEPOINT job").await;
                    complete(&mut tx, job, token, false).await;
                    savepoint(&mut tx, "RELEASE SAVEPOINT job").await;
                }
                tx.commit().await.expect("commit");
            }
        }
    }
}

async fn savepoint(tx: &mut Transaction, statement: &'static str) {
    on_conn!(tx.tx(), |c, _sql| sqlx::raw_sql(statement)
        .execute(c)
        .await
        .map(drop))
    .expect("savepoint");
}

/// Runs the job (a noop, or one row written) and completes it in `tx`, `counted` in the done
/// counts or not.
async fn complete(tx: &mut Transaction, job: &(i64, String), token: i64, counted: bool) {
    black_box(&job.1); // the noop handler
    if WRITES.load(Ordering::Relaxed) {
        let order: OrderPlaced = serde_json::from_str(&job.1).expect("payload");
        on_conn!(tx.tx(), |c, _sql| sqlx::query(
            "INSERT INTO written (order_id) VALUES ($1)"
        )
        .bind(order.0.order_id)
        .execute(c)
        .await
        .map(drop))
        .expect("write");
    }
    let statement = match counted {
        true => pg::COMPLETE_COUNTED,
        false => on_conn!(tx.tx(), |_c, sql| sql::COMPLETE),
    };
    let changed = on_conn!(tx.tx(), |c, _sql| sqlx::query(statement)
        .bind(now_ms())
        .bind(job.0)
        .bind(token)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))
    .expect("complete");
    assert_eq!(changed, 1);
}

/// Jobs per second of one drain over a fresh backlog of `jobs`.
async fn drain_rate(store: Store, drainer: Drainer, jobs: usize, hold_snapshot: bool) -> f64 {
    let db = Db::fresh(store, 8).await;
    db.backlog(jobs).await;
    // A long read transaction elsewhere: a snapshot taken now, held through the drain.
    let snapshot = match (&db.pool, hold_snapshot) {
        (Pool::Postgres(pool), true) => {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .expect("isolation");
            let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signals_jobs")
                .fetch_one(&mut *tx)
                .await
                .expect("read");
            Some(tx)
        }
        _ => None,
    };
    if let Drainer::Worker {
        spread_counts: true,
        ..
    } = drainer
    {
        db.raw(pg::SPREAD_DONE_COUNTS).await;
    }
    NOOPS.store(0, Ordering::SeqCst);
    let start = Instant::now();
    match drainer {
        Drainer::ByHand {
            tasks,
            limit,
            completion,
        } => {
            let loops: Vec<_> = (0..tasks)
                .map(|_| tokio::spawn(drain_by_hand(db.pool.clone(), limit, completion)))
                .collect();
            for task in loops {
                task.await.expect("drain");
            }
        }
        Drainer::Worker {
            concurrency, ahead, ..
        } => {
            let builder = AsyncWorker::builder(db.pool.clone()).concurrency(concurrency);
            let builder =
                match ahead.or(std::env::var("TMP_AHEAD").ok().and_then(|a| a.parse().ok())) {
                    Some(ahead) => builder.fetch_ahead(ahead),
                    None => builder,
                };
            let running = builder.build().await.expect("worker").start();
            // Every handler ran; then every job's completion committed (a cheap query on the
            // partial indexes, every 20 ms; a full count here would cost more than the drain).
            let deadline = Instant::now() + Duration::from_secs(600);
            while NOOPS.load(Ordering::Relaxed) < jobs {
                assert!(Instant::now() < deadline, "the drain stalled");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            running.wait_idle().await.expect("idle");
            running
                .shutdown(Duration::from_secs(10))
                .await
                .expect("shutdown");
        }
    }
    let elapsed = start.elapsed();
    drop(snapshot);
    let done = db
        .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
        .await;
    assert_eq!(done, jobs as i64, "every job done");
    let counted = match drainer {
        Drainer::ByHand {
            completion: Completion::EachJobCounted,
            ..
        } => jobs as i64,
        Drainer::ByHand { .. } => 0,
        Drainer::Worker { .. } => jobs as i64,
    };
    let counts = db
        .count("SELECT CAST(COALESCE(SUM(done), 0) AS BIGINT) FROM signals_job_counts")
        .await;
    assert_eq!(counts, counted, "jobs in the done counts");
    db.drop().await;
    jobs as f64 / elapsed.as_secs_f64()
}

fn drains(store: Store) -> Vec<(&'static str, Drainer)> {
    let by_hand = |tasks, limit, completion| Drainer::ByHand {
        tasks,
        limit,
        completion,
    };
    let worker = |concurrency| Drainer::Worker {
        concurrency,
        spread_counts: false,
        ahead: None,
    };
    let free_slots_only = |concurrency| Drainer::Worker {
        concurrency,
        spread_counts: false,
        ahead: Some(0),
    };
    match store {
        Store::Postgres => vec![
            (
                "floor: 4 tasks, claim 1, complete each",
                by_hand(4, 1, Completion::EachJob),
            ),
            (
                "floor: 4 tasks, claim 16, complete each",
                by_hand(4, 16, Completion::EachJob),
            ),
            (
                "floor: 4 tasks, claim 16, one completion statement per batch",
                by_hand(4, 16, Completion::OneStatement),
            ),
            (
                "floor: 4 tasks, claim 16, savepoint per job, commit per batch",
                by_hand(4, 16, Completion::SavepointPerJob),
            ),
            ("AsyncWorker, concurrency 16", worker(16)),
            ("AsyncWorker, concurrency 100", worker(100)),
            ("AsyncWorker, concurrency 256", worker(256)),
            (
                "AsyncWorker, concurrency 16, free slots only (`fetch_ahead(0)`)",
                free_slots_only(16),
            ),
            (
                "AsyncWorker, concurrency 100, free slots only (`fetch_ahead(0)`)",
                free_slots_only(100),
            ),
        ],
        Store::Sqlite => vec![
            (
                "floor: claim 16, complete each",
                by_hand(1, 16, Completion::EachJob),
            ),
            (
                "floor: claim 16, savepoint per job, commit per batch",
                by_hand(1, 16, Completion::SavepointPerJob),
            ),
            ("AsyncWorker, concurrency 1", worker(1)),
            ("AsyncWorker, concurrency 16", worker(16)),
            (
                "AsyncWorker, concurrency 16, free slots only (`fetch_ahead(0)`)",
                free_slots_only(16),
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Latency (PostgreSQL).

/// Latencies in ms, commit returned → handler started, at `rate` commits/s for `seconds`.
async fn latency_round(seconds: f64, rate: f64, listen: bool) -> Vec<f64> {
    let db = Db::fresh(Store::Postgres, 4).await;
    lock(&STARTS).clear();
    let poll = if listen { 500 } else { 100 };
    let running = AsyncWorker::builder(db.pool.clone())
        .concurrency(16)
        .listen(listen)
        .poll_interval(Duration::from_millis(poll))
        .build()
        .await
        .expect("worker")
        .start();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let count = (seconds * rate) as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut committed = Vec::with_capacity(count);
    let mut next = Instant::now();
    for seq in 0..count {
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
        next += every;
        let mut tx = db.pool.begin().await.expect("begin");
        insert_order(tx.tx(), &Order::new(seq as i64 + 1)).await;
        notify_async(&Ping { seq }, &mut Ctx { tx: tx.tx() })
            .await
            .expect("notify");
        tx.commit().await.expect("commit");
        committed.push(since_origin(Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock(&STARTS).len() < count {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    running
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    db.drop().await;
    let starts: HashMap<usize, i64> = lock(&STARTS).iter().copied().collect();
    (0..count)
        .map(|seq| (starts[&seq] - committed[seq]) as f64 / 1e6)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics, tables, sections.

/// Runs each of `variants` once per round, in alternating order; results per variant.
async fn interleaved<T, F, Fut>(rounds: usize, variants: usize, mut run: F) -> Vec<Vec<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut results: Vec<Vec<T>> = (0..variants).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let order: Vec<usize> = match round % 2 {
            0 => (0..variants).collect(),
            _ => (0..variants).rev().collect(),
        };
        for variant in order {
            results[variant].push(run(variant).await);
        }
        eprintln!("  round {} of {rounds} done (load {})", round + 1, load());
    }
    results
}

/// Prints one rate table: `names` with their rates in k/s, and each one's ratio to row `base`.
fn rate_table(names: &[&str], rates: &[Vec<f64>], unit: &str, base: usize, versus: &str) {
    let floor = median(&rates[base]);
    println!("| variant | k {unit}/s (median) | rounds min–max | {versus} |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, rates) in names.iter().zip(rates) {
        let (min, max) = range(rates);
        let rate = median(rates);
        println!(
            "| {name} | {:.2} | {:.2}–{:.2} | {:.2}× |",
            rate / 1e3,
            min / 1e3,
            max / 1e3,
            rate / floor
        );
    }
}

struct Settings {
    rounds: usize,
    jobs: usize,
    enqueue_jobs: usize,
    seconds: f64,
    sections: Vec<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        Settings {
            rounds: var("ROUNDS", 3.0) as usize,
            jobs: var("JOBS", 20_000.0) as usize,
            enqueue_jobs: var("ENQUEUE_JOBS", 3_000.0) as usize,
            seconds: var("SECONDS", 5.0),
            sections: std::env::args()
                .skip(1)
                .filter(|arg| !arg.starts_with("--"))
                .collect(),
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

async fn enqueue_section(settings: &Settings) {
    for store in [Store::Postgres, Store::Sqlite] {
        println!(
            "\n## 1. Enqueue on {store:?} (sqlx): one transaction per order ({} orders)\n",
            settings.enqueue_jobs
        );
        let variants = [
            ("floor: domain row + job row by hand", Place::ByHand),
            (
                "ours: domain row + `notify_async` (one queued handler)",
                Place::Notify,
            ),
            ("reference: domain row alone", Place::DomainOnly),
        ];
        let rates = interleaved(settings.rounds, variants.len(), |v| {
            enqueue_rate(store, settings.enqueue_jobs, variants[v].1)
        })
        .await;
        let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
        rate_table(&names, &rates, "tx", 0, "vs floor");
    }
}

/// The PostgreSQL drain with a handler that writes one row through the job's transaction,
/// beside floors that commit each job with its completion, or a group of 16 in savepoints.
async fn writing_drain_section(settings: &Settings) {
    WRITES.store(true, Ordering::SeqCst);
    println!(
        "\n## 5. Drain on Postgres (sqlx): {} jobs whose handler writes one row\n",
        settings.jobs
    );
    let variants = [
        (
            "floor: 4 tasks, claim 16, each job's row + completion committed alone",
            Drainer::ByHand {
                tasks: 4,
                limit: 16,
                completion: Completion::EachJob,
            },
        ),
        (
            "floor: 4 tasks, claim 16, savepoint per job, one commit per 16",
            Drainer::ByHand {
                tasks: 4,
                limit: 16,
                completion: Completion::SavepointPerJob,
            },
        ),
        (
            "AsyncWorker, concurrency 16",
            Drainer::Worker {
                concurrency: 16,
                spread_counts: false,
                ahead: None,
            },
        ),
        (
            "AsyncWorker, concurrency 100",
            Drainer::Worker {
                concurrency: 100,
                spread_counts: false,
                ahead: None,
            },
        ),
    ];
    let rates = interleaved(settings.rounds, variants.len(), |v| {
        drain_rate(Store::Postgres, variants[v].1, settings.jobs, false)
    })
    .await;
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    rate_table(&names, &rates, "jobs", 0, "vs first row");
    WRITES.store(false, Ordering::SeqCst);
}

/// What the done counter costs a writing job on PostgreSQL: the writing drain of section 5
/// with and without the upsert into `signals_job_counts` that completes each job, rounds
/// interleaved. By hand, with 4 and with 8 tasks (8: the pool's size, so as many job
/// transactions at once as `AsyncWorker` can have here): the floor that commits each job's
/// row with its completion, completed by the plain `UPDATE` or by the library's `COMPLETE`
/// (the same `UPDATE` with the upsert in a CTE). `AsyncWorker` cannot complete a job without
/// the upsert (it reads the statement's row count), so it runs as migrated and with the
/// counter rows spread ([`pg::SPREAD_DONE_COUNTS`]): what sharing 16 counter rows costs.
async fn done_counter_section(settings: &Settings) {
    WRITES.store(true, Ordering::SeqCst);
    println!(
        "\n## 6. The done counter's cost on PostgreSQL: {} jobs whose handler writes one row\n",
        settings.jobs
    );
    let by_hand = |tasks, completion| Drainer::ByHand {
        tasks,
        limit: 16,
        completion,
    };
    let worker = |concurrency, spread_counts| Drainer::Worker {
        concurrency,
        spread_counts,
        ahead: None,
    };
    let variants = [
        (
            "floor: 4 tasks, claim 16, row + completion committed alone, no counter",
            by_hand(4, Completion::EachJob),
        ),
        (
            "floor: the same, completed with the library's COMPLETE (counter upsert)",
            by_hand(4, Completion::EachJobCounted),
        ),
        (
            "floor: 8 tasks, claim 16, row + completion committed alone, no counter",
            by_hand(8, Completion::EachJob),
        ),
        (
            "floor: the same, completed with the library's COMPLETE (counter upsert)",
            by_hand(8, Completion::EachJobCounted),
        ),
        (
            "AsyncWorker, concurrency 16, a counter row per job",
            worker(16, true),
        ),
        (
            "AsyncWorker, concurrency 16 (as migrated)",
            worker(16, false),
        ),
        (
            "AsyncWorker, concurrency 100, a counter row per job",
            worker(100, true),
        ),
        (
            "AsyncWorker, concurrency 100 (as migrated)",
            worker(100, false),
        ),
    ];
    let rates = interleaved(settings.rounds, variants.len(), |v| {
        drain_rate(Store::Postgres, variants[v].1, settings.jobs, false)
    })
    .await;
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    rate_table(&names, &rates, "jobs", 0, "vs first row");
    let pairs = [
        "floor, 4 tasks: no counter / COMPLETE's upsert",
        "floor, 8 tasks: no counter / COMPLETE's upsert",
        "AsyncWorker, concurrency 16: a counter row per job / as migrated",
        "AsyncWorker, concurrency 100: a counter row per job / as migrated",
    ];
    println!("\n| pair | rate ratio (medians) | per round |");
    println!("| --- | ---: | --- |");
    for (pair, name) in pairs.iter().enumerate() {
        let (without, with) = (&rates[2 * pair], &rates[2 * pair + 1]);
        let per_round: Vec<String> = without
            .iter()
            .zip(with)
            .map(|(a, b)| format!("{:.2}", a / b))
            .collect();
        println!(
            "| {name} | {:.2}× | {} |",
            median(without) / median(with),
            per_round.join(" / ")
        );
    }
    WRITES.store(false, Ordering::SeqCst);
}

async fn drain_section(settings: &Settings, hold_snapshot: bool) {
    let stores: &[Store] = match hold_snapshot {
        true => &[Store::Postgres],
        false => &[Store::Postgres, Store::Sqlite],
    };
    for &store in stores {
        let title = match hold_snapshot {
            true => "while another connection holds a REPEATABLE READ snapshot open",
            false => "",
        };
        println!(
            "\n## {}. Drain on {store:?} (sqlx): {} noop jobs {title}\n",
            if hold_snapshot { 4 } else { 2 },
            settings.jobs
        );
        let all = drains(store);
        let base_name = all[match store {
            Store::Postgres => 2,
            Store::Sqlite => 0,
        }]
        .0;
        // `DRAIN_ONLY="AsyncWorker, concurrency 16|…"`: only the variants named (exactly).
        let only = std::env::var("DRAIN_ONLY").ok();
        let variants: Vec<_> = all
            .into_iter()
            .filter(|(name, _)| {
                only.as_deref()
                    .is_none_or(|only| only.split('|').any(|o| o == *name))
            })
            .collect();
        let rates = interleaved(settings.rounds, variants.len(), |v| {
            drain_rate(store, variants[v].1, settings.jobs, hold_snapshot)
        })
        .await;
        let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
        let base = names.iter().position(|name| *name == base_name);
        rate_table(
            &names,
            &rates,
            "jobs",
            base.unwrap_or(0),
            match base {
                Some(_) => "vs third row (PG) / first (SQLite)",
                None => "vs first row",
            },
        );
    }
}

async fn latency_section(settings: &Settings) {
    let rate = 200.0;
    println!(
        "\n## 3. Latency on PostgreSQL: commit → handler start at {rate} commits/s for {} s, one worker at concurrency 16\n",
        settings.seconds
    );
    let variants = [
        ("LISTEN/NOTIFY (default), 500 ms polling behind it", true),
        (
            "no LISTEN: this process's own wake-ups, polling every 100 ms behind them",
            false,
        ),
    ];
    let rounds = interleaved(settings.rounds, variants.len(), |v| {
        latency_round(settings.seconds, rate, variants[v].1)
    })
    .await;
    println!("| variant | p50 ms | p99 ms | max ms | p50 per round | p99 per round |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for ((name, _), rounds) in variants.iter().zip(&rounds) {
        let p50s: Vec<f64> = rounds.iter().map(|r| percentile(r, 0.5)).collect();
        let p99s: Vec<f64> = rounds.iter().map(|r| percentile(r, 0.99)).collect();
        let max = rounds
            .iter()
            .map(|r| range(r).1)
            .fold(f64::NEG_INFINITY, f64::max);
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {name} | {:.2} | {:.2} | {max:.2} | {} | {} |",
            median(&p50s),
            median(&p99s),
            list(&p50s),
            list(&p99s)
        );
    }
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "queue_async benchmark: run it with `cargo bench -p signals-bench --bench queue_async`"
        );
        return;
    }
    origin();
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("# Queue benchmark, async path (PostgreSQL and SQLite through sqlx)\n");
        println!(
            "{cores} cores; {} rounds, interleaved; load average at start: {}",
            settings.rounds,
            load()
        );
        if settings.runs("enqueue") {
            eprintln!("--- enqueue (load {})", load());
            enqueue_section(&settings).await;
        }
        if settings.runs("drain") {
            eprintln!("--- drain (load {})", load());
            drain_section(&settings, false).await;
        }
        if settings.runs("latency") {
            eprintln!("--- latency (load {})", load());
            latency_section(&settings).await;
        }
        if settings.runs("writing-drain") {
            eprintln!("--- writing-drain (load {})", load());
            writing_drain_section(&settings).await;
        }
        if settings.runs("done-counter") {
            eprintln!("--- done-counter (load {})", load());
            done_counter_section(&settings).await;
        }
        if settings.runs("long-read") {
            eprintln!("--- long-read (load {})", load());
            drain_section(&settings, true).await;
        }
        println!("\nload average at end: {}", load());
    });
}
