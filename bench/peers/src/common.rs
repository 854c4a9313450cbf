//! What every peer's benchmark shares: settings, the job payload, the domain
//! row, a fresh database per run, and the completion counter.

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection, PgPool,
};
use tokio::sync::Notify;

/// Result type of the benchmark code: any error, with its message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long a worker may take to stop once asked (not timed; aborted after).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections in each run's pool (graphile_worker's own default for `max_pg_conn`).
pub const POOL_SIZE: u32 = 20;

/// Settings, all from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server to benchmark on (`SIGNALS_BENCH_POSTGRES_URL`, else the tests'
    /// `SIGNALS_TEST_POSTGRES_URL`); runs make their own databases there.
    pub url: String,
    /// Orders (one transaction each) in the enqueue section (`ENQUEUE_JOBS`).
    pub enqueue_jobs: usize,
    /// Backlog drained in the drain section (`JOBS`).
    pub jobs: usize,
    /// Rounds of every variant (`ROUNDS`).
    pub rounds: usize,
    /// Concurrencies of the drain section (`CONCURRENCIES`, comma-separated).
    pub concurrencies: Vec<usize>,
    /// Longest a drain may take before it is reported as timed out (`DRAIN_TIMEOUT_SECS`).
    pub drain_timeout: Duration,
    /// Cut-off of the drain paced by graphile_worker's default poll interval (`PACED_TIMEOUT_SECS`).
    pub paced_timeout: Duration,
}

impl Settings {
    /// Reads the settings from the environment, with the documented defaults.
    pub fn from_env() -> Self {
        fn num(name: &str, default: usize) -> usize {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
                Err(_) => default,
            }
        }
        let concurrencies = std::env::var("CONCURRENCIES")
            .unwrap_or_else(|_| "1,4,16".into())
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("CONCURRENCIES: comma-separated numbers")
            })
            .collect();
        Self {
            url: std::env::var("SIGNALS_BENCH_POSTGRES_URL")
                .or_else(|_| std::env::var("SIGNALS_TEST_POSTGRES_URL"))
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            enqueue_jobs: num("ENQUEUE_JOBS", 3_000),
            jobs: num("JOBS", 20_000),
            rounds: num("ROUNDS", 3).max(1),
            concurrencies,
            drain_timeout: Duration::from_secs(num("DRAIN_TIMEOUT_SECS", 180) as u64),
            paced_timeout: Duration::from_secs(num("PACED_TIMEOUT_SECS", 30) as u64),
        }
    }
}

/// The job: the same ~100-byte order signal as `signals-queue`'s own benchmark,
/// `{"order_id":1,"customer":"customer-00000001@example.com","amount_cents":4999,"currency":"EUR"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: u64,
    pub customer: String,
    pub amount_cents: u32,
    pub currency: String,
}

impl OrderPlaced {
    /// The `n`th order.
    pub fn new(n: u64) -> Self {
        Self {
            order_id: n,
            customer: format!("customer-{n:08}@example.com"),
            amount_cents: 4999,
            currency: "EUR".into(),
        }
    }
}

/// Creates the domain table of the enqueue section (the same table as
/// `bench/benches/queue_async.rs` creates on PostgreSQL).
pub async fn create_orders_table(pool: &PgPool) -> BenchResult<()> {
    pool.execute(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, \
         amount_cents BIGINT NOT NULL, currency TEXT NOT NULL)",
    )
    .await?;
    Ok(())
}

/// Writes the domain row of `order` inside the caller's transaction.
pub async fn insert_order(conn: &mut PgConnection, order: &OrderPlaced) -> BenchResult<()> {
    sqlx::query(
        "INSERT INTO orders (id, customer, amount_cents, currency) VALUES ($1, $2, $3, $4)",
    )
    .bind(order.order_id as i64)
    .bind(&order.customer)
    .bind(order.amount_cents as i64)
    .bind(&order.currency)
    .execute(conn)
    .await?;
    Ok(())
}

/// A database of its own for one run of one variant, dropped afterwards.
pub struct FreshDb {
    admin: PgConnectOptions,
    name: String,
    /// Pool of [`POOL_SIZE`] connections to the new database.
    pub pool: PgPool,
}

impl FreshDb {
    /// Creates an empty database on the server of `url` and connects a pool to it.
    pub async fn create(url: &str, label: &str) -> BenchResult<Self> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let admin = PgConnectOptions::from_str(url)?;
        let name = format!(
            "signals_peers_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            label
        );
        let mut conn = admin.connect().await?;
        // The name is made here from a fixed prefix, the pid, a counter and a fixed label.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(admin.clone().database(&name))
            .await?;
        Ok(Self { admin, name, pool })
    }

    /// Closes the pool and drops the database (ending any connection a peer left behind).
    pub async fn drop_db(self) -> BenchResult<()> {
        self.pool.close().await;
        let mut conn = self.admin.connect().await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Ok(())
    }
}

/// Counts handler runs and wakes the timer when the last job of the backlog has run.
#[derive(Debug)]
pub struct Progress {
    done: AtomicUsize,
    target: usize,
    all_done: Notify,
}

impl Progress {
    /// A counter that fires after `target` handler runs.
    pub fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicUsize::new(0),
            target,
            all_done: Notify::new(),
        })
    }

    /// Called by the noop handlers: one more job ran.
    pub fn job_ran(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            self.all_done.notify_one();
        }
    }

    /// Handler runs so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }

    /// Waits until every job has run or `timeout` passed since `started`; the
    /// sample is taken at that moment (the worker's shutdown is not timed).
    pub async fn wait(&self, started: Instant, timeout: Duration) -> Sample {
        let finished = tokio::time::timeout(timeout, self.all_done.notified())
            .await
            .is_ok();
        Sample::new(self.done(), started.elapsed(), !finished)
    }
}

/// One measurement of one variant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Operations (transactions or jobs) per second.
    pub rate: f64,
    /// Operations done; less than asked for if the run timed out.
    pub done: usize,
    /// The run was cut off by the drain timeout; `rate` is the partial rate.
    pub timed_out: bool,
}

impl Sample {
    /// `done` operations in `elapsed`.
    pub fn new(done: usize, elapsed: Duration, timed_out: bool) -> Self {
        Self {
            rate: done as f64 / elapsed.as_secs_f64(),
            done,
            timed_out,
        }
    }
}

/// `/proc/loadavg`, trimmed.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unavailable ({e})"))
}

/// Fails the run with `message` unless `ok` (a sanity check after a run).
pub fn check(ok: bool, message: impl FnOnce() -> String) -> BenchResult<()> {
    if ok {
        Ok(())
    } else {
        Err(message().into())
    }
}
