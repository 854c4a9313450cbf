//! A day of churn on PostgreSQL: millions of jobs written, claimed, completed and purged through
//! the queue's own statements (`claim`, `complete_many`, `purge_done`), and what a claim costs as
//! the table ages. Two schemas side by side, rounds interleaved: schema 4 as `migrate` leaves it
//! (fillfactor 80, autovacuum at 1 %), and the same table with PostgreSQL's default storage
//! settings (`RESET`), so that any difference is the settings'.
//!
//! Each round writes `BATCH` due jobs (100,000; one `INSERT ... SELECT`), then drains
//! them 256 per claim, completing each claim's jobs in one statement, and times every claim; every
//! fifth round purges the done jobs. Beside its backlog of the round's jobs, the table always
//! holds `BACKLOG` (100,000) jobs of another handler (a foreign backlog) and as many of its own
//! waiting out a backoff. `JOBS` (2,000,000) per schema, so `JOBS / BATCH` rounds.
//!
//! ```text
//! cargo bench -p signals-bench --bench churn               # 2,000,000 jobs per schema
//! JOBS=500000 cargo bench -p signals-bench --bench churn
//! JOBS=1000 BATCH=200 BACKLOG=1000 cargo bench -p signals-bench --bench churn   # a smoke test
//! ```
//!
//! PostgreSQL is at `SIGNALS_BENCH_POSTGRES_URL`, else `SIGNALS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). The program runs only under `cargo bench`.
//!
//! Autovacuum: when the server runs with `autovacuum = off` (as the machines these benchmarks
//! run on do), a task of the benchmark stands in for it: every second it reads each table's dead
//! rows and runs `VACUUM` once they pass the table's own threshold, as autovacuum's launcher
//! would (`autovacuum_vacuum_threshold` 50 + `autovacuum_vacuum_scale_factor` × rows, from the
//! table's settings or the server's), without autovacuum's cost-based throttling. The output says
//! which ran.

use std::time::{Duration, Instant};

use signals_queue::__broker::{acquire, claim, complete_many, ClaimRequest};
use signals_queue::{AsyncQueue, Pool};

mod common;
use common::{median, percentile, postgres_url};

/// Jobs per claim.
const CLAIM: usize = 256;

const HANDLERS: &str = r#"[{"name": "churn.job", "signal": "Churned"}]"#;

struct Schema {
    name: String,
    label: &'static str,
    pool: Pool,
    /// Claim times of each round, in milliseconds.
    rounds: Vec<Vec<f64>>,
    worker: i64,
}

impl Schema {
    async fn new(url: &str, label: &'static str, defaults: bool, backlog: i64) -> Schema {
        let name = format!("signals_churn_{}", uuid::Uuid::now_v7().simple());
        let admin = Pool::connect(url, 1).await.expect("PostgreSQL");
        run(&admin, &format!("CREATE SCHEMA {name}")).await;
        admin.close().await;
        let pool = Pool::connect(&format!("{url}?options=-c%20search_path%3D{name}"), 3)
            .await
            .expect("PostgreSQL");
        AsyncQueue::new(pool.clone())
            .migrate()
            .await
            .expect("migrate");
        if defaults {
            run(
                &pool,
                "ALTER TABLE signals_jobs RESET (fillfactor, autovacuum_vacuum_scale_factor,
                     autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor,
                     autovacuum_vacuum_cost_delay)",
            )
            .await;
        }
        // The foreign backlog, and a backlog of its own waiting out a backoff.
        run(
            &pool,
            &format!(
                "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                                           max_attempts, run_at, created_at)
                 SELECT gen_random_uuid(), 'Outbox', 'outbox.publish', 'q', 0, '{{}}', 'available',
                        25, 0, 0 FROM generate_series(1, {backlog});
                 INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                                           max_attempts, run_at, created_at)
                 SELECT gen_random_uuid(), 'Churned', 'churn.job', 'q', 5, '{{}}', 'scheduled', 25,
                        9000000000000, 0 FROM generate_series(1, {backlog});"
            ),
        )
        .await;
        Schema {
            name,
            label,
            pool,
            rounds: Vec::new(),
            worker: 1,
        }
    }

    /// One round: write `batch` jobs, drain them claim by claim; purge every fifth round.
    async fn round(&mut self, n: usize, batch: i64) {
        run(
            &self.pool,
            &format!(
                "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                                           max_attempts, run_at, created_at)
                 SELECT gen_random_uuid(), 'bench::Churned', 'churn.job', 'q', 0,
                        '{{\"order_id\": ' || g || ', \"email\": \"customer@example.com\"}}',
                        'available', 25, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT,
                        (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
                 FROM generate_series(1, {batch}) AS g"
            ),
        )
        .await;
        let mut times = Vec::new();
        loop {
            let mut conn = acquire(&self.pool).await.expect("connection");
            let request = ClaimRequest {
                handlers: HANDLERS,
                limit: CLAIM,
                suspects: false,
                worker: self.worker,
                now: None,
                token: signals_queue::__broker::token(),
            };
            let started = Instant::now();
            let claimed = claim(conn.tx(), &request).await.expect("claim");
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if claimed.is_empty() {
                break;
            }
            let done: Vec<(i64, i64)> = claimed.iter().map(|job| (job.id, job.token)).collect();
            complete_many(conn.tx(), &done, None)
                .await
                .expect("complete");
        }
        if n % 5 == 4 {
            AsyncQueue::new(self.pool.clone())
                .purge_done(Duration::ZERO)
                .await
                .expect("purge");
        }
        self.rounds.push(times);
    }

    async fn size(&self) -> (String, String) {
        let mut conn = acquire(&self.pool).await.expect("connection");
        let sizes: (String, String) = signals_queue::with_db!(conn.tx(), |c| sqlx::query_as(
            "SELECT pg_size_pretty(pg_table_size('signals_jobs')),
                    pg_size_pretty(pg_indexes_size('signals_jobs'))"
        )
        .fetch_one(c)
        .await)
        .expect("sizes");
        sizes
    }

    async fn drop(self) {
        let name = self.name.clone();
        self.pool.close().await;
        let url = postgres_url();
        let admin = Pool::connect(&url, 1).await.expect("PostgreSQL");
        run(&admin, &format!("DROP SCHEMA {name} CASCADE")).await;
        admin.close().await;
    }
}

/// Stands in for autovacuum on one schema's jobs table until `stop`: see the module comment.
async fn vacuum_like_autovacuum(pool: Pool, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let due = "
        SELECT s.n_dead_tup > 50 + COALESCE(
                   (SELECT split_part(o, '=', 2)::FLOAT8 FROM unnest(c.reloptions) AS o
                    WHERE o LIKE 'autovacuum_vacuum_scale_factor=%'),
                   current_setting('autovacuum_vacuum_scale_factor')::FLOAT8)
               * GREATEST(c.reltuples, 0)
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.relid = 'signals_jobs'::regclass";
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(mut conn) = acquire(&pool).await else {
            continue;
        };
        let vacuum: bool =
            signals_queue::with_db!(conn.tx(), |c| sqlx::query_scalar(due).fetch_one(c).await)
                .unwrap_or(false);
        if vacuum {
            let _ = signals_queue::with_db!(conn.tx(), |c| sqlx::raw_sql("VACUUM signals_jobs")
                .execute(c)
                .await
                .map(drop));
        }
    }
}

async fn run(pool: &Pool, sql: &str) {
    signals_queue::with_db!(pool, |c| sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(c)
        .await
        .map(drop))
    .expect(sql);
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return; // `cargo test` runs bench targets without `--bench`: nothing to do then
    }
    let var = |name: &str, default: i64| -> i64 {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let (jobs, batch, backlog) = (
        var("JOBS", 2_000_000),
        var("BATCH", 100_000),
        var("BACKLOG", 100_000),
    );
    let rounds = (jobs / batch).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = postgres_url();
        let mut schemas = vec![
            Schema::new(&url, "schema 4 (fillfactor 80, autovacuum 1 %)", false, backlog).await,
            Schema::new(&url, "PostgreSQL's default storage settings", true, backlog).await,
        ];
        let autovacuum: String = {
            let mut conn = acquire(&schemas[0].pool).await.expect("connection");
            signals_queue::with_db!(conn.tx(), |c| sqlx::query_scalar("SHOW autovacuum")
                .fetch_one(c)
                .await)
            .expect("autovacuum")
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stand_ins: Vec<_> = match autovacuum.as_str() {
            "on" => Vec::new(),
            _ => schemas
                .iter()
                .map(|schema| tokio::spawn(vacuum_like_autovacuum(schema.pool.clone(), stop.clone())))
                .collect(),
        };
        let started = Instant::now();
        for n in 0..rounds {
            // Alternate which schema goes first, so that neither always meets the other's vacuum.
            let order: Vec<usize> = if n % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
            for i in order {
                schemas[i].round(n, batch).await;
            }
            eprintln!("round {}/{rounds} ({:.0?})", n + 1, started.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in stand_ins {
            let _ = task.await;
        }
        let vacuum = match autovacuum.as_str() {
            "on" => "the server's autovacuum",
            _ => "autovacuum is off on this server: the benchmark's stand-in vacuumed at each table's threshold",
        };
        println!("\n{jobs} jobs per schema, {batch} per round, {CLAIM} per claim; {vacuum}\n");
        println!("| schema | claim median, first 2 rounds | last 2 rounds | p99 first | p99 last | table | indexes |");
        println!("|---|---|---|---|---|---|---|");
        for schema in &schemas {
            let first: Vec<f64> = schema.rounds.iter().take(2).flatten().copied().collect();
            let last: Vec<f64> = schema.rounds.iter().rev().take(2).flatten().copied().collect();
            let (table, indexes) = schema.size().await;
            println!(
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {table} | {indexes} |",
                schema.label,
                median(&first),
                median(&last),
                percentile(&first, 0.99),
                percentile(&last, 0.99),
            );
        }
        println!("\nclaim median per round, ms:\n");
        for schema in &schemas {
            let medians: Vec<String> = schema
                .rounds
                .iter()
                .map(|times| format!("{:.1}", median(times)))
                .collect();
            println!("- {}: {}", schema.label, medians.join(" "));
        }
        for schema in schemas {
            schema.drop().await;
        }
    });
}
