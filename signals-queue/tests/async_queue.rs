//! The queue rung's async path, end to end, on PostgreSQL and on SQLite through sqlx:
//! `notify_async` writes jobs in the caller's transaction, `AsyncWorker` runs the same handlers
//! later; retries, dead jobs, leases and fencing, shutdown, a killed worker process, lost
//! connections, and LISTEN/NOTIFY wake-ups.
//!
//! PostgreSQL is at `SIGNALS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a schema of its own and drops
//! it. Without a server the PostgreSQL half is skipped with a message, except under `CI=true`,
//! where it fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
mod support;

use support::{postgres_url, wait_for, Db};

use signals_queue::{
    with_db, AsyncJobScope, AsyncQueue, AsyncWorker, AsyncWorkerBuilder, EnqueueAsync,
    FromJobAsync, JobState, Pool, RetryPolicy, Tx,
};

/// What handlers count outside any transaction: attempts the "outside world" saw.
#[derive(Default)]
struct Attempts {
    sent: AtomicUsize,
    audited: AtomicUsize,
    /// Attempts of `flaky` alone.
    flaky: AtomicUsize,
}

struct AppCtx<'a> {
    tx: Tx<'a>,
    attempts: &'a Attempts,
}

impl EnqueueAsync for AppCtx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for AppCtx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        let attempts = job.state::<Arc<Attempts>>()?;
        Ok(AppCtx {
            tx: job.transaction(),
            attempts,
        })
    }
}

/// Runs `sql` with one `i64` parameter on whichever database `tx` is on.
async fn exec(tx: Tx<'_>, sql: &'static str, value: i64) -> Result<u64, sqlx::Error> {
    Ok(with_db!(tx, |conn| sqlx::query(sql)
        .bind(value)
        .execute(conn)
        .await?
        .rows_affected()))
}

#[derive(Signal, Serialize, Deserialize, Debug)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct OrderPlaced {
    order_id: i64,
}

/// In the caller's transaction, as always.
#[on(OrderPlaced, priority = 10)]
async fn record_order(sig: &OrderPlaced, ctx: &mut AppCtx<'_>) -> Result<(), sqlx::Error> {
    exec(
        ctx.tx.reborrow(),
        "INSERT INTO orders (id) VALUES ($1)",
        sig.order_id,
    )
    .await?;
    Ok(())
}

/// An `async fn` handler, queued: written as a job, run by the worker.
#[on(OrderPlaced, queue = "email")]
async fn send_welcome(sig: &OrderPlaced, ctx: &mut AppCtx<'_>) -> Result<(), sqlx::Error> {
    ctx.attempts.sent.fetch_add(1, Ordering::SeqCst);
    exec(
        ctx.tx.reborrow(),
        "INSERT INTO emails (order_id) VALUES ($1)",
        sig.order_id,
    )
    .await?;
    Ok(())
}

/// A plain `fn` handler of the same asynchronous signal, queued and filtered at enqueue time.
#[on(OrderPlaced, queue, when = |o| o.order_id % 2 == 0)]
fn audit_even(_: &OrderPlaced, ctx: &mut AppCtx<'_>) {
    ctx.attempts.audited.fetch_add(1, Ordering::SeqCst);
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct Flaky {
    fail_times: usize,
}

/// Writes, then fails its first `fail_times` attempts: the failed attempts' writes roll back.
#[on(Flaky, queue, max_attempts = 3)]
async fn flaky(sig: &Flaky, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    let attempt = ctx.attempts.flaky.fetch_add(1, Ordering::SeqCst) + 1;
    exec(
        ctx.tx.reborrow(),
        "INSERT INTO emails (order_id) VALUES ($1)",
        attempt as i64,
    )
    .await?;
    if attempt <= sig.fail_times {
        return Err(format!("the mail provider is down (attempt {attempt})").into());
    }
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct Explodes;

#[on(Explodes, queue, max_attempts = 2)]
async fn explodes(_: &Explodes, ctx: &mut AppCtx<'_>) {
    ctx.attempts.sent.fetch_add(1, Ordering::SeqCst);
    panic!("boom");
}

/// The jobs of the load tests: each writes one effect row, after a pause.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct Work {
    n: i64,
}

#[on(Work, queue = "work")]
async fn do_work(sig: &Work, ctx: &mut AppCtx<'_>) -> Result<(), sqlx::Error> {
    ctx.attempts.sent.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2)).await;
    exec(
        ctx.tx.reborrow(),
        "INSERT INTO effects (n) VALUES ($1)",
        sig.n,
    )
    .await?;
    Ok(())
}

impl Db {
    fn worker(&self, attempts: &Arc<Attempts>) -> AsyncWorkerBuilder {
        AsyncWorker::builder(self.pool.clone())
            .state(Arc::clone(attempts))
            .poll_interval(Duration::from_millis(20))
            .retry(RetryPolicy {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
            })
    }

    /// Runs a worker with the default settings until no job is left.
    async fn drain(&self, attempts: &Arc<Attempts>) {
        self.worker(attempts)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
    }

    /// Notifies `signal` in a transaction of its own, then commits or rolls back.
    async fn notify<S>(&self, attempts: &Attempts, signal: &S, commit: bool)
    where
        S: for<'c> Signal<Context<'c> = AppCtx<'c>>,
    {
        let mut tx = self.pool.begin().await.unwrap();
        notify_async(
            signal,
            &mut AppCtx {
                tx: tx.tx(),
                attempts,
            },
        )
        .await
        .unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }

    /// Queues `n` `Work` jobs, in one transaction.
    async fn queue_work(&self, n: i64) {
        let attempts = Attempts::default();
        let mut tx = self.pool.begin().await.unwrap();
        for n in 0..n {
            notify_async(
                &Work { n },
                &mut AppCtx {
                    tx: tx.tx(),
                    attempts: &attempts,
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Every `Work` job ran its effect exactly once; the attempts the jobs recorded.
    async fn assert_each_effect_once(&self, n: i64) -> i64 {
        let name = self.name();
        assert_eq!(
            self.count("SELECT COUNT(*) FROM effects").await,
            n,
            "{name}"
        );
        assert_eq!(
            self.count("SELECT COUNT(DISTINCT n) FROM effects").await,
            n,
            "{name}: an effect ran twice"
        );
        assert_eq!(
            self.count("SELECT COUNT(*) FROM signals_jobs WHERE state <> 'done'")
                .await,
            0,
            "{name}"
        );
        self.count("SELECT CAST(SUM(attempt) AS BIGINT) FROM signals_jobs")
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_writes_one_job_per_queued_handler_and_rollback_erases_them() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Attempts::default();
        db.notify(&attempts, &OrderPlaced { order_id: 1 }, false)
            .await;
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs").await,
            0,
            "{name}"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 0, "{name}");

        db.notify(&attempts, &OrderPlaced { order_id: 2 }, true)
            .await;
        db.notify(&attempts, &OrderPlaced { order_id: 3 }, true)
            .await;
        // Order 2: the email and the (even) audit; order 3: the email only.
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs").await,
            3,
            "{name}"
        );
        assert_eq!(
            db.count("SELECT COUNT(DISTINCT event_id) FROM signals_jobs")
                .await,
            2,
            "{name}: one event id per notify"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 2, "{name}");
        // Nothing ran yet: the queued handlers are jobs.
        assert_eq!(attempts.sent.load(Ordering::SeqCst), 0);
        let stats = AsyncQueue::new(db.pool.clone()).stats().await.unwrap();
        assert_eq!(stats.total(JobState::Pending), 3, "{name}");
        assert!(stats.handlers["async_queue::send_welcome"].linked);
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_each_job_once_and_commits_its_writes_with_the_completion() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        for order_id in 1..=10 {
            db.notify(&attempts, &OrderPlaced { order_id }, true).await;
        }
        db.worker(&attempts)
            .concurrency(3)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(db.count("SELECT COUNT(*) FROM emails").await, 10, "{name}");
        assert_eq!(attempts.sent.load(Ordering::SeqCst), 10, "{name}");
        assert_eq!(attempts.audited.load(Ordering::SeqCst), 5, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                .await,
            15,
            "{name}"
        );
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_its_failed_writes_roll_back_and_a_poison_job_dies() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        db.notify(&attempts, &Flaky { fail_times: 2 }, true).await;
        db.drain(&attempts).await;
        assert_eq!(attempts.flaky.load(Ordering::SeqCst), 3, "{name}");
        // Only the third attempt's write committed.
        assert_eq!(db.count("SELECT COUNT(*) FROM emails").await, 1, "{name}");
        assert_eq!(
            db.count("SELECT MAX(order_id) FROM emails").await,
            3,
            "{name}"
        );

        // A job that always fails is dead after max_attempts (3), with its error, and can be
        // retried.
        let attempts = Arc::new(Attempts::default());
        db.notify(&attempts, &Flaky { fail_times: 100 }, true).await;
        db.drain(&attempts).await;
        assert_eq!(attempts.flaky.load(Ordering::SeqCst), 3, "{name}");
        let queue = AsyncQueue::new(db.pool.clone());
        let dead = queue.dead_jobs(0, 100).await.unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("the mail provider is down (attempt 3)"),
            "{name}"
        );
        assert_eq!(queue.retry_dead().await.unwrap(), 1);
        assert_eq!(queue.stats().await.unwrap().total(JobState::Pending), 1);
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        db.notify(&attempts, &Explodes, true).await;
        db.notify(&attempts, &OrderPlaced { order_id: 7 }, true)
            .await;
        db.drain(&attempts).await;
        // Two attempts of the panicking job, then the worker went on with the email.
        assert_eq!(attempts.sent.load(Ordering::SeqCst), 3, "{name}");
        assert_eq!(db.count("SELECT COUNT(*) FROM emails").await, 1, "{name}");
        let dead = AsyncQueue::new(db.pool.clone())
            .dead_jobs(0, 100)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("the handler panicked: boom")
        );
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_no_longer_deserializes_is_retried_through_a_deploy_then_dead() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        db.notify(&attempts, &OrderPlaced { order_id: 5 }, true)
            .await;
        // The signal type changed since the job was written: its field is gone.
        // (PostgreSQL keeps the producer's text in `body`, SQLite in `payload`.)
        let column = if db.schema.is_some() {
            "body"
        } else {
            "payload"
        };
        let sql = format!(
            "UPDATE signals_jobs SET {column} = '{{\"renamed\": 5}}' WHERE handler = 'async_queue::send_welcome'"
        );
        with_db!(&db.pool, |pool| sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        // Within the payload grace (default 30 minutes), it is retried: the other version of a
        // rolling deploy may read it.
        let running = db
            .worker(&attempts)
            .retry(RetryPolicy {
                base: Duration::from_secs(3600),
                cap: Duration::from_secs(3600),
            })
            .build()
            .await
            .unwrap()
            .start();
        wait_for("the failed attempt", || async {
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE attempt = 1 AND state IN ('pending', 'scheduled') AND last_error IS NOT NULL")
                .await
                == 1
        })
        .await;
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        db.execute("UPDATE signals_jobs SET run_at = 0").await;
        // Past the grace it is dead.
        db.worker(&attempts)
            .payload_grace(Duration::ZERO)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(attempts.sent.load(Ordering::SeqCst), 0, "{name}");
        let dead = AsyncQueue::new(db.pool.clone())
            .dead_jobs(0, 100)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(dead[0].attempts, 2, "{name}: dead once past the grace");
        assert!(
            dead[0]
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("the payload does not deserialize into the signal"),
            "{name}: {:?}",
            dead[0].last_error
        );
        db.drop_schema().await;
    }
}

/// A job an older version left `running` with a lease of its own (no worker row) is rescued
/// once that lease expired, and run again. (The fence against a worker whose lease was taken
/// away is `lifecycle.rs`'s, driven through the worker's own completion and failure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_an_older_version_left_is_rescued_once_its_lease_expired() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        db.notify(&attempts, &OrderPlaced { order_id: 9 }, true)
            .await;
        db.execute(
            "UPDATE signals_jobs SET state = 'running', attempt = 1, token = 42, lease_until = 0
             WHERE handler = 'async_queue::send_welcome'",
        )
        .await;
        db.drain(&attempts).await;
        assert_eq!(db.count("SELECT COUNT(*) FROM emails").await, 1, "{name}");
        assert_eq!(
            db.count(
                "SELECT CAST(attempt AS BIGINT) FROM signals_jobs
                 WHERE handler = 'async_queue::send_welcome' AND state = 'done'"
            )
            .await,
            2,
            "{name}: the stalled claim's attempt counted"
        );
        db.drop_schema().await;
    }
}

/// Holds `Gated` handlers until the test opens it.
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct Gated {
    fail: bool,
}

/// Waits at the gate, then writes (and fails if asked).
#[on(Gated, queue)]
async fn gated(sig: &Gated, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    STARTED.fetch_add(1, Ordering::SeqCst);
    GATE.acquire().await?.forget();
    exec(ctx.tx.reborrow(), "INSERT INTO effects (n) VALUES ($1)", 1).await?;
    if sig.fail {
        return Err("failed after losing the lease".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_can_neither_complete_nor_fail_the_job() {
    for db in Db::all().await {
        for fail in [false, true] {
            let name = db.name();
            db.execute("DELETE FROM signals_jobs").await;
            let attempts = Arc::new(Attempts::default());
            db.notify(&attempts, &Gated { fail }, true).await;
            let started = STARTED.load(Ordering::SeqCst);
            let running = db.worker(&attempts).build().await.unwrap().start();
            wait_for("the handler to start", || async {
                STARTED.load(Ordering::SeqCst) > started
            })
            .await;
            // While the handler runs, its lease passes to another claim (token 7): what a rescue
            // and a second worker's claim do to a worker that was paused or partitioned.
            db.execute("UPDATE signals_jobs SET token = 7 WHERE state = 'running'")
                .await;
            GATE.add_permits(1);
            // Shutdown lets the running handler finish.
            running.shutdown(Duration::from_secs(10)).await.unwrap();
            // Its completion (or failure) was refused, and its writes rolled back with it.
            assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 0, "{name}");
            assert_eq!(
                db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running' AND token = 7")
                    .await,
                1,
                "{name} (fail: {fail}): the new claim still holds the job"
            );
        }
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_on_one_table_run_every_job_exactly_once() {
    for db in Db::all().await {
        db.queue_work(300).await;
        let attempts = Arc::new(Attempts::default());
        let a = db.worker(&attempts).concurrency(2).build().await.unwrap();
        let b = db.worker(&attempts).concurrency(2).build().await.unwrap();
        let (a, b) = tokio::join!(a.run_until_idle(), b.run_until_idle());
        a.unwrap();
        b.unwrap();
        let total = db.assert_each_effect_once(300).await;
        assert_eq!(total, 300, "{}: no job ran twice", db.name());
        assert_eq!(attempts.sent.load(Ordering::SeqCst), 300);
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_and_claims_nothing_it_does_not_start() {
    for db in Db::all().await {
        let name = db.name();
        db.queue_work(60).await;
        let attempts = Arc::new(Attempts::default());
        let running = db
            .worker(&attempts)
            .concurrency(2)
            .build()
            .await
            .unwrap()
            .start();
        wait_for("some effects", || async {
            db.count("SELECT COUNT(*) FROM effects").await >= 3
        })
        .await;
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'")
                .await,
            0,
            "{name}"
        );
        let done = db
            .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
            .await;
        assert_eq!(
            db.count("SELECT COUNT(*) FROM effects").await,
            done,
            "{name}"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state IN ('pending', 'available') AND attempt = 0")
                .await,
            60 - done,
            "{name}: a fetch claims only for free slots: the rest were never claimed"
        );
        db.drain(&attempts).await;
        db.assert_each_effect_once(60).await;
        db.drop_schema().await;
    }
}

/// The environment variable that turns this test binary into a worker process for the crash
/// test: its value is the database URL.
const CHILD_WORKER: &str = "SIGNALS_QUEUE_TEST_CHILD_ASYNC_WORKER";

/// Runs as the child process of the crash test (and does nothing otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker_process() {
    let Ok(url) = std::env::var(CHILD_WORKER) else {
        return;
    };
    let pool = Pool::connect(&url, 4).await.unwrap();
    let _running = AsyncWorker::builder(pool)
        .state(Arc::new(Attempts::default()))
        .concurrency(2)
        .lease(Duration::from_secs(1))
        .build()
        .await
        .unwrap()
        .start();
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_loses_no_job_and_doubles_no_effect() {
    for db in Db::all().await {
        let name = db.name();
        db.queue_work(200).await;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["child_worker_process", "--exact", "--nocapture"])
            .env(CHILD_WORKER, &db.url)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the child to run jobs", || async {
            db.count("SELECT COUNT(*) FROM effects").await >= 20
        })
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // PostgreSQL finishes a statement the dead process sent (a claim) before it notices
        // the closed connection: count once the server has settled.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running_at_kill = db
            .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'")
            .await;
        // What a fetch may hold: its two slots, and the short jobs fetched ahead of them.
        assert!(
            running_at_kill <= 2 + signals_queue::lifecycle::DEFAULT_FETCH_AHEAD as i64,
            "{name}: at most the slots and the jobs fetched ahead"
        );
        let attempts = Arc::new(Attempts::default());
        db.worker(&attempts)
            .concurrency(2)
            .lease(Duration::from_secs(1))
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let total = db.assert_each_effect_once(200).await;
        assert!(
            total - 200 <= running_at_kill,
            "{name}: {total} attempts for 200 jobs, {running_at_kill} running at the kill"
        );
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_retried_and_no_job_is_lost_or_doubled() {
    let Some(db) = Db::all().await.into_iter().find(|db| db.schema.is_some()) else {
        return;
    };
    db.queue_work(300).await;
    let attempts = Arc::new(Attempts::default());
    let running = db
        .worker(&attempts)
        .concurrency(2)
        .lease(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
        .start();
    // Kill every connection of this test's schema but the killer's own, three times over, while
    // the worker runs: its pool reconnects, failed attempts roll back and are retried.
    let schema = db.schema.clone().unwrap();
    let kill = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{schema}'"
    );
    let admin = sqlx::PgPool::connect(&postgres_url()).await.unwrap();
    for round in 1..=3 {
        wait_for("progress", || async {
            db.count("SELECT COUNT(*) FROM effects").await >= 40 * round
        })
        .await;
        let terminated: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(kill.clone()))
            .fetch_all(&admin)
            .await
            .unwrap();
        eprintln!("terminated {} connections", terminated.len());
    }
    running.wait_idle().await.unwrap();
    running.shutdown(Duration::from_secs(10)).await.unwrap();
    db.assert_each_effect_once(300).await;
    admin.close().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_committed_job_wakes_an_idle_worker_through_listen_notify() {
    let Some(db) = Db::all().await.into_iter().find(|db| db.schema.is_some()) else {
        return;
    };
    let attempts = Arc::new(Attempts::default());
    // Polling every minute: only the notification can start the job quickly.
    let running = db
        .worker(&attempts)
        .poll_interval(Duration::from_secs(60))
        .build()
        .await
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_millis(300)).await; // the worker idles, listening
    let mut latencies = Vec::new();
    for order_id in 1..=5 {
        let committed = Instant::now();
        db.notify(&attempts, &OrderPlaced { order_id }, true).await;
        wait_for("the email", || async {
            attempts.sent.load(Ordering::SeqCst) == order_id as usize
        })
        .await;
        latencies.push(committed.elapsed());
    }
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    eprintln!("notify → handler start: {latencies:?}");
    assert!(
        latencies.iter().all(|l| *l < Duration::from_secs(10)),
        "{latencies:?}: the worker waited for its poll"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_concurrent_migrations_take_turns() {
    for db in Db::all().await {
        let a = AsyncQueue::new(db.pool.clone());
        let b = AsyncQueue::new(db.pool.clone());
        let (a, b) = tokio::join!(a.migrate(), b.migrate());
        a.unwrap();
        b.unwrap();
        assert_eq!(
            db.count("SELECT CAST(COUNT(*) AS BIGINT) FROM signals_queue_schema")
                .await,
            1
        );
        db.drop_schema().await;
    }
}

#[test]
fn the_url_of_an_unknown_database_is_a_clear_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(Pool::connect("mysql://localhost/shop", 1))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "unsupported database URL `mysql://localhost/shop`: use `postgres://...` or `sqlite://...`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn among_jobs_claimed_together_a_failing_job_rolls_back_alone() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        // One transaction: five jobs, a job that fails once after writing, five more; one
        // fetch takes them all, each in a slot and transaction of its own.
        let mut tx = db.pool.begin().await.unwrap();
        for n in 0..11 {
            let mut ctx = AppCtx {
                tx: tx.tx(),
                attempts: &attempts,
            };
            match n {
                5 => notify_async(&Flaky { fail_times: 1 }, &mut ctx).await,
                n => notify_async(&Work { n }, &mut ctx).await,
            }
            .unwrap();
        }
        tx.commit().await.unwrap();
        db.worker(&attempts)
            .concurrency(16)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 10, "{name}");
        // The failed first attempt's write rolled back; the retry's stayed.
        assert_eq!(attempts.flaky.load(Ordering::SeqCst), 2, "{name}");
        assert_eq!(db.count("SELECT COUNT(*) FROM emails").await, 1, "{name}");
        assert_eq!(
            db.count("SELECT MAX(order_id) FROM emails").await,
            2,
            "{name}"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                .await,
            11,
            "{name}"
        );
        db.drop_schema().await;
    }
}

/// A worker whose handlers' context needs state it was not given is an error at `build()`,
/// naming the handler and the type; a worker of a kind this binary links no handler of (here,
/// the thread `Worker`: every handler here is of an asynchronous signal) is one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfiguration_is_an_error_at_build_not_at_the_first_job() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let fresh = signals_queue::Pool::connect(&fresh, 1).await.unwrap();
    let Err(error) = AsyncWorker::builder(fresh)
        .state(Arc::new(Attempts::default()))
        .build()
        .await
    else {
        panic!("built a worker on a database nobody migrated");
    };
    assert!(
        matches!(
            error,
            signals_queue::Error::SchemaOutdated {
                found: None,
                needed: _
            }
        ),
        "{error}"
    );
    let db = Db::sqlite().await;
    let Err(error) = AsyncWorker::builder(db.pool.clone()).build().await else {
        panic!("built a worker without the state its contexts need");
    };
    let message = error.to_string();
    assert!(
        message
            .starts_with("the worker can't build the context of the queued handler `async_queue::")
            && message.contains("Arc<async_queue::Attempts>"),
        "{message}"
    );
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().unwrap();
        signals_queue::Queue::open(dir.path().join("jobs.db"))
            .unwrap()
            .migrate()
            .unwrap();
        let Err(error) = signals_queue::Worker::builder(dir.path().join("jobs.db")).build() else {
            panic!("built a thread worker that would never run a job");
        };
        assert!(
            matches!(error, signals_queue::Error::NoHandlers { .. }),
            "{error}"
        );
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous)]
struct Reconciled {
    url: String,
}

/// Reads, waits on "the network" while another connection tries to write, then writes.
#[on(Reconciled, queue)]
async fn reconcile(sig: &Reconciled, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    ctx.attempts.sent.fetch_add(1, Ordering::SeqCst);
    let orders: i64 = with_db!(&mut ctx.tx, |conn| sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders"
    )
    .fetch_one(conn)
    .await)?;
    // Another writer, meanwhile: it waits for this job's transaction.
    let other = Pool::connect(&sig.url, 1).await?;
    let writer = tokio::spawn(async move {
        let mut tx = other.begin().await?;
        exec(tx.tx(), "INSERT INTO orders (id) VALUES ($1)", 77).await?;
        tx.commit().await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "the other writer waits for the job's write lock"
    );
    exec(
        ctx.tx.reborrow(),
        "INSERT INTO effects (n) VALUES ($1)",
        orders,
    )
    .await?;
    std::mem::forget(writer); // it commits once the job's transaction does
    Ok(())
}

/// On SQLite (sqlx) a job's transaction begins `IMMEDIATE` at its first use, so a handler that
/// reads, waits, then writes works at its first attempt; the price is that every other writer
/// waits for it meanwhile (make the network call before the first statement to avoid that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_job_that_reads_waits_then_writes_holds_the_write_lock_from_its_first_read() {
    let db = Db::sqlite().await;
    let attempts = Arc::new(Attempts::default());
    db.notify(
        &attempts,
        &Reconciled {
            url: db.url.clone(),
        },
        true,
    )
    .await;
    db.drain(&attempts).await;
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 1, "one attempt");
    assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 1);
    wait_for("the other writer's commit", || async {
        db.count("SELECT COUNT(*) FROM orders WHERE id = 77").await == 1
    })
    .await;
}

/// Two services share the jobs table, and the other one wrote a job under a name this one uses,
/// for a signal of its own (a publishing function of the same name, say): this worker's claim
/// matches the signal too, so it neither takes the job nor waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_another_signal_under_the_same_name_is_not_taken() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        let sql = match db.pool.is_postgres() {
            true => "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at)
                     VALUES (gen_random_uuid(), 'billing::InvoiceSent', 'async_queue::send_welcome', 'billing.invoices', 0, '{\"invoice\": 1}', 'available', 25, 0, 0)",
            false => "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
                      VALUES ('00000000-0000-7000-8000-000000000001', 'billing::InvoiceSent', 'async_queue::send_welcome', 'billing.invoices', 0, '{\"invoice\": 1}', 25, 0, 0)",
        };
        db.execute(sql).await;
        db.notify(&attempts, &OrderPlaced { order_id: 3 }, true)
            .await;
        db.drain(&attempts).await;
        assert_eq!(
            attempts.sent.load(Ordering::SeqCst),
            1,
            "{name}: its own job ran"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE signal = 'billing::InvoiceSent' AND attempt = 0 AND state <> 'running'")
                .await,
            1,
            "{name}: the other service's job is untouched"
        );
        db.drop_schema().await;
    }
}

/// `stats` reads done counts from `signals_job_counts`, which workers flush (at every
/// maintenance tick and when they stop) and purges decrement: it never counts done rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_counts_are_kept_by_workers_and_purges() {
    for db in Db::all().await {
        let name = db.name();
        let attempts = Arc::new(Attempts::default());
        for order_id in [20, 21, 22] {
            db.notify(&attempts, &OrderPlaced { order_id }, true).await;
        }
        db.drain(&attempts).await;
        let queue = AsyncQueue::new(db.pool.clone());
        let stats = queue.stats().await.unwrap();
        // Each order: `send_welcome`, and `audit_even` for the even ones.
        assert_eq!(stats.total(JobState::Done), 5, "{name}");
        db.execute("INSERT INTO signals_job_counts (handler, shard, done) VALUES ('async_queue::send_welcome', 99, 100)")
            .await;
        assert_eq!(
            queue.stats().await.unwrap().total(JobState::Done),
            105,
            "{name}: the counts, not the rows"
        );
        let purged = AsyncQueue::new(db.pool.clone())
            .with_clock(signals_queue::Clock::manual(i64::MAX / 2))
            .purge_done(Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(purged, 5, "{name}");
        assert_eq!(
            queue.stats().await.unwrap().total(JobState::Done),
            100,
            "{name}"
        );
        db.drop_schema().await;
    }
}
