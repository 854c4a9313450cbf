//! Retention on a table of a million finished jobs, on PostgreSQL and SQLite: how long the
//! fleet's leader takes to delete them in its batches of 10,000 rows (the done counts kept
//! exact), and what an application writing jobs meanwhile sees: the latency of its `notify`
//! transactions, beside the same writer's latency before the prune started.
//!
//! ```text
//! cargo bench -p signals-bench --bench retention              # 1,000,000 rows per database
//! ROWS=20000 cargo bench -p signals-bench --bench retention   # a smoke test
//! ```
//!
//! PostgreSQL is at `SIGNALS_BENCH_POSTGRES_URL`, else `SIGNALS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). The program runs only under `cargo bench`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{
    with_db, AsyncJobScope, AsyncQueue, AsyncWorker, EnqueueAsync, FromJobAsync, Pool, Tx,
};

mod common;
use common::{load, lock, now_ms, percentile, postgres_url};

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
struct Placed;

/// The application's own jobs while the prune runs.
#[on(Placed, queue)]
async fn noop(_: &Placed, _: &mut Ctx<'_>) {}

const DAY: i64 = 24 * 3600 * 1000;

async fn run(pool: &Pool, sql: String) {
    with_db!(pool, |c| sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(c)
        .await
        .map(drop))
    .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

async fn count(pool: &Pool, sql: &'static str) -> i64 {
    with_db!(pool, |c| sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(c)
        .await
        .unwrap())
}

/// `rows` done jobs finished two days ago (counted in the done counts), as a job table holds
/// them after a busy day.
async fn fill(pool: &Pool, rows: i64) {
    let old = now_ms() - 2 * DAY;
    let handler = signals_core::catalog()
        .get::<Placed>()
        .path()
        .rsplit_once("::")
        .map_or("noop", |(module, _)| module)
        .to_owned()
        + "::noop";
    let insert = match pool.is_postgres() {
        true => format!(
            "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                                       max_attempts, run_at, created_at, finished_at, counted)
             SELECT gen_random_uuid(), 'Placed', '{handler}', 'default', 0, '{{}}', 'done',
                    25, 0, {old}, {old} + n, true FROM generate_series(1, {rows}) AS n"
        ),
        false => format!(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT {rows})
             INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, state,
                                       max_attempts, run_at, created_at, finished_at, counted)
             SELECT 'e', 'Placed', '{handler}', 'default', 0, '{{}}', 'done', 25, 0, {old},
                    {old} + x, 1 FROM n"
        ),
    };
    run(pool, insert).await;
    run(
        pool,
        format!(
            "INSERT INTO signals_job_counts (handler, shard, done) VALUES ('{handler}', 0, {rows})"
        ),
    )
    .await;
    if pool.is_postgres() {
        run(pool, "ANALYZE signals_jobs".to_owned()).await;
    }
}

/// Writes one job per transaction every 5 ms until `stop`; each transaction's latency in
/// milliseconds.
async fn write(pool: Pool, stop: Arc<AtomicBool>, latencies: Arc<Mutex<Vec<f64>>>) {
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        notify_async(&Placed, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        lock(&latencies).push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn summary(latencies: &[f64]) -> String {
    match latencies {
        [] => "no writes".to_owned(),
        _ => format!(
            "{} writes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            percentile(latencies, 1.0)
        ),
    }
}

async fn bench(label: &str, pool: Pool, rows: i64) {
    AsyncQueue::new(pool.clone()).migrate().await.unwrap();
    let filled = Instant::now();
    fill(&pool, rows).await;
    println!(
        "{label}: {rows} done rows written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    // The writer alone first: its latency with no prune running.
    let stop = Arc::new(AtomicBool::new(false));
    let before = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write(pool.clone(), Arc::clone(&stop), Arc::clone(&before)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write(pool.clone(), Arc::clone(&stop), Arc::clone(&during)));
    let started = Instant::now();
    let worker = AsyncWorker::builder(pool.clone())
        .build()
        .await
        .unwrap()
        .start();
    let cut = now_ms() - DAY;
    let old = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 FROM signals_jobs
         WHERE state = 'done' AND finished_at < {cut} LIMIT 1) AS left_over"
    );
    let old: &'static str = Box::leak(old.into_boxed_str());
    while count(&pool, old).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    worker.shutdown(Duration::from_secs(10)).await.unwrap();
    let left = count(
        &pool,
        "SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'",
    )
    .await;
    let counted: u64 = AsyncQueue::new(pool.clone())
        .stats()
        .await
        .unwrap()
        .handlers
        .values()
        .map(|handler| handler.done)
        .sum();
    println!(
        "{label}: pruned {rows} rows in {:.1} s ({:.0} rows/s, {} batches of 10,000); \
         done rows left {left}, done counts {counted} ({})",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        (rows + 9_999) / 10_000,
        if left as u64 == counted {
            "exact"
        } else {
            "WRONG"
        },
    );
    println!(
        "{label}: writer before the prune: {}",
        summary(&lock(&before))
    );
    println!(
        "{label}: writer during the prune: {}",
        summary(&lock(&during))
    );
    pool.close().await;
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return; // `cargo test` runs bench targets without `--bench`: nothing to do then
    }
    let rows: i64 = std::env::var("ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("load {}", load());
    runtime.block_on(async {
        let url = postgres_url();
        let schema = format!("signals_retention_{}", uuid::Uuid::now_v7().simple());
        let admin = Pool::connect(&url, 1).await.expect("PostgreSQL");
        run(&admin, format!("CREATE SCHEMA {schema}")).await;
        let pool = Pool::connect(&format!("{url}?options=-c%20search_path%3D{schema}"), 4)
            .await
            .unwrap();
        bench("PostgreSQL", pool, rows).await;
        run(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
        admin.close().await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("retention.db").display());
        let pool = Pool::connect(&url, 4).await.unwrap();
        bench("SQLite", pool, rows).await;
    });
    println!("load {}", load());
}
