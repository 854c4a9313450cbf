//! The queue rung on SQLite, end to end: enqueue in the caller's transaction, a worker running
//! the same handler later, retries, dead jobs, leases and fencing, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use signals_core::{notify, on, BoxError, Signal};
use signals_queue::{Clock, Enqueue, FromJob, JobScope, JobState, Queue, RetryPolicy, Worker};

/// What the handlers count outside any transaction: attempts the "outside world" saw.
#[derive(Default)]
struct Attempts {
    sent: AtomicUsize,
}

/// The context of every signal here: the transaction, and the attempt counter.
struct AppCtx<'a> {
    tx: &'a Transaction<'a>,
    attempts: &'a Attempts,
}

impl Enqueue for AppCtx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for AppCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(AppCtx {
            tx: job.transaction(),
            attempts: job.state::<Arc<Attempts>>()?,
        })
    }
}

#[derive(Signal, Serialize, Deserialize, Debug)]
#[signal(context = AppCtx<'_>)]
struct OrderPlaced {
    order_id: i64,
    email: String,
}

/// Runs in the caller's transaction, as always.
#[on(OrderPlaced, priority = 10)]
fn record_order(sig: &OrderPlaced, ctx: &mut AppCtx<'_>) -> rusqlite::Result<()> {
    ctx.tx
        .execute("INSERT INTO orders (id) VALUES (?1)", [sig.order_id])?;
    Ok(())
}

/// The same kind of handler, queued: written as a job, run by the worker.
#[on(OrderPlaced, queue = "email")]
fn send_welcome(sig: &OrderPlaced, ctx: &mut AppCtx<'_>) -> rusqlite::Result<()> {
    ctx.attempts.sent.fetch_add(1, Ordering::SeqCst);
    ctx.tx.execute(
        "INSERT INTO emails (order_id, recipient) VALUES (?1, ?2)",
        (sig.order_id, &sig.email),
    )?;
    Ok(())
}

/// A second queued handler of the same signal, filtered at enqueue time.
#[on(OrderPlaced, queue, when = |o| o.order_id % 2 == 0)]
fn audit_even(sig: &OrderPlaced, ctx: &mut AppCtx<'_>) -> rusqlite::Result<()> {
    ctx.tx
        .execute("INSERT INTO audit (order_id) VALUES (?1)", [sig.order_id])?;
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>)]
struct Flaky {
    fail_times: usize,
}

/// Fails its first `fail_times` attempts, then writes.
#[on(Flaky, queue, max_attempts = 3)]
fn flaky(sig: &Flaky, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    let attempt = ctx.attempts.sent.fetch_add(1, Ordering::SeqCst) + 1;
    ctx.tx
        .execute("INSERT INTO audit (order_id) VALUES (?1)", [attempt as i64])?;
    if attempt <= sig.fail_times {
        return Err(format!("provider unavailable (attempt {attempt})").into());
    }
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>)]
struct Explodes;

#[on(Explodes, queue, max_attempts = 2, name = "explodes-v1")]
fn explodes(_: &Explodes, ctx: &mut AppCtx<'_>) {
    ctx.attempts.sent.fetch_add(1, Ordering::SeqCst);
    panic!("boom");
}

const SCHEMA: &str = "
    CREATE TABLE orders (id INTEGER PRIMARY KEY);
    CREATE TABLE emails (order_id INTEGER NOT NULL, recipient TEXT NOT NULL);
    CREATE TABLE audit  (order_id INTEGER NOT NULL);
";

/// A fresh database file with the jobs table and the application's tables.
fn database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let queue = Queue::open(&path).unwrap();
    queue.migrate().unwrap();
    queue.connection().execute_batch(SCHEMA).unwrap();
    (dir, path)
}

fn place(conn: &mut Connection, attempts: &Attempts, order_id: i64, commit: bool) {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let signal = OrderPlaced {
        order_id,
        email: format!("customer{order_id}@example.com"),
    };
    notify(&signal, &mut AppCtx { tx: &tx, attempts }).unwrap();
    if commit {
        tx.commit().unwrap();
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// Notifies `signal` in a committed transaction, then runs a worker until nothing is left.
fn commit_and_drain<S>(path: &std::path::Path, attempts: &Arc<Attempts>, signal: &S)
where
    S: signals_core::SyncSignal + for<'c> Signal<Context<'c> = AppCtx<'c>>,
{
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    notify(signal, &mut AppCtx { tx: &tx, attempts }).unwrap();
    tx.commit().unwrap();
    worker(path, attempts)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
}

/// Writes a job row by hand (as another version of the program, or another service, would),
/// then runs a worker until nothing of its own handlers is left.
fn drain_job_written_by_hand(
    path: &std::path::Path,
    attempts: &Arc<Attempts>,
    handler: &str,
    payload: &str,
) {
    Connection::open(path)
        .unwrap()
        .execute(
            "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
             VALUES ('00000000-0000-7000-8000-000000000000', 'moved::elsewhere::OrderPlaced', ?1, 'default', 0, ?2, 25, 0, 0)",
            (handler, payload),
        )
        .unwrap();
    worker(path, attempts)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
}

fn worker(path: &std::path::Path, attempts: &Arc<Attempts>) -> signals_queue::WorkerBuilder {
    // Every linked handler's context is built once at `build()`: the `Work` jobs' state too.
    Worker::builder(path)
        .state(Arc::clone(attempts))
        .state(AttemptsDb(path.to_owned()))
        .poll_interval(Duration::from_millis(10))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        })
}

#[test]
fn commit_writes_one_job_per_queued_handler_and_rollback_erases_them() {
    let (_dir, path) = database();
    let mut conn = Connection::open(&path).unwrap();
    let attempts = Attempts::default();
    place(&mut conn, &attempts, 1, false);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM signals_jobs"), 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM orders"), 0);

    place(&mut conn, &attempts, 2, true);
    let jobs: Vec<(String, String, String, String)> = conn
        .prepare("SELECT handler, queue, event_id, payload FROM signals_jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    // In run order: equal priorities, so by name.
    assert_eq!(jobs[0].0, "sqlite::audit_even");
    assert_eq!(jobs[0].1, "default");
    assert_eq!(jobs[1].0, "sqlite::send_welcome");
    assert_eq!(jobs[1].1, "email");
    assert_eq!(jobs[0].2, jobs[1].2, "one event id per notify");
    assert_eq!(
        uuid::Uuid::parse_str(&jobs[0].2).unwrap().get_version_num(),
        7
    );
    assert_eq!(
        jobs[1].3,
        r#"{"order_id":2,"email":"customer2@example.com"}"#
    );
    // Nothing ran yet: queued handlers run on the worker.
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 0);

    // The filter is evaluated at enqueue time: an odd order gets no audit job, a new event id.
    place(&mut conn, &attempts, 3, true);
    let third: Vec<String> = conn
        .prepare("SELECT event_id FROM signals_jobs WHERE payload LIKE '%\"order_id\":3%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(third.len(), 1);
    assert_ne!(third[0], jobs[0].2);
}

#[test]
fn the_worker_runs_each_job_once_and_commits_its_writes_with_the_completion() {
    let (_dir, path) = database();
    let mut conn = Connection::open(&path).unwrap();
    let attempts = Arc::new(Attempts::default());
    for order_id in 1..=20 {
        place(&mut conn, &attempts, order_id, true);
    }
    worker(&path, &attempts)
        .concurrency(3)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM emails"), 20);
    assert_eq!(
        count(&conn, "SELECT COUNT(DISTINCT order_id) FROM emails"),
        20
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM audit"), 10);
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 20);
    let stats = Queue::open(&path).unwrap().stats().unwrap();
    assert_eq!(stats.total(JobState::Done), 30);
    assert_eq!(
        stats.total(JobState::Pending) + stats.total(JobState::Running),
        0
    );
}

#[test]
fn a_failing_job_is_retried_and_its_failed_attempts_leave_no_writes() {
    let (_dir, path) = database();
    let conn = Connection::open(&path).unwrap();
    let attempts = Arc::new(Attempts::default());
    commit_and_drain(&path, &attempts, &Flaky { fail_times: 2 });
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 3);
    // Each attempt wrote a row; only the successful attempt's committed.
    let written: Vec<i64> = conn
        .prepare("SELECT order_id FROM audit")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(written, [3]);
    let (state, attempt): (String, i64) = conn
        .query_row("SELECT state, attempt FROM signals_jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), attempt), ("done", 3));
}

#[test]
fn a_poison_job_is_dead_after_max_attempts_with_its_error_and_can_be_retried() {
    let (_dir, path) = database();
    let conn = Connection::open(&path).unwrap();
    let attempts = Arc::new(Attempts::default());
    commit_and_drain(&path, &attempts, &Flaky { fail_times: 100 });
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 3);
    let queue = Queue::open(&path).unwrap();
    let dead = queue.dead_jobs(0, 100).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("provider unavailable (attempt 3)")
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM audit"), 0);

    assert_eq!(queue.retry_dead().unwrap(), 1);
    let (state, attempt): (String, i64) = conn
        .query_row("SELECT state, attempt FROM signals_jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), attempt), ("pending", 0));
}

#[test]
fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    let (_dir, path) = database();
    let attempts = Arc::new(Attempts::default());
    commit_and_drain(&path, &attempts, &Explodes);
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 2);
    let dead = Queue::open(&path).unwrap().dead_jobs(0, 100).unwrap();
    assert_eq!(
        dead[0].handler, "explodes-v1",
        "`name = ...` is the job's name"
    );
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("the handler panicked: boom")
    );
}

/// Written in 1970 (`created_at` 0): far past the payload grace, so dead at its first attempt.
#[test]
fn a_payload_that_no_longer_deserializes_is_dead_once_past_the_grace() {
    let (_dir, path) = database();
    let attempts = Arc::new(Attempts::default());
    drain_job_written_by_hand(
        &path,
        &attempts,
        "sqlite::send_welcome",
        r#"{"order":"renamed"}"#,
    );
    let dead = Queue::open(&path).unwrap().dead_jobs(0, 100).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[0]
        .last_error
        .as_deref()
        .unwrap()
        .starts_with("the payload does not deserialize into the signal: missing field `order_id`"));
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 0);
}

/// Written just now: within the payload grace (a rolling deploy), the job is retried.
#[test]
fn a_payload_that_no_longer_deserializes_is_retried_within_the_grace() {
    let (_dir, path) = database();
    let attempts = Arc::new(Attempts::default());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
         VALUES ('00000000-0000-7000-8000-000000000000', 'moved::elsewhere::OrderPlaced', 'sqlite::send_welcome', 'default', 0, '{\"renamed\": 1}', 25, 0, ?1)",
        [signals_queue::Clock::system().now()],
    )
    .unwrap();
    let running = worker(&path, &attempts)
        .retry(RetryPolicy {
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(3600),
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for(|| {
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'pending' AND attempt = 1",
        ) == 1
    });
    running.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'dead'"
        ),
        0
    );
}

#[test]
fn jobs_of_a_handler_this_binary_does_not_link_are_left_alone_and_reported() {
    let (_dir, path) = database();
    let attempts = Arc::new(Attempts::default());
    drain_job_written_by_hand(&path, &attempts, "billing::send_invoice", "{}");
    let stats = Queue::open(&path).unwrap().stats().unwrap();
    let other = &stats.handlers["billing::send_invoice"];
    assert_eq!((other.pending, other.linked), (1, false));
}

/// A job an older version left `running` with a lease of its own (no worker row) is rescued
/// once that lease expired, and run again. (The fence against a worker whose lease was taken
/// away is `sqlite_lifecycle.rs`'s, driven through the worker's own completion and failure.)
#[test]
fn a_running_job_an_older_version_left_is_rescued_once_its_lease_expired() {
    let (_dir, path) = database();
    let mut conn = Connection::open(&path).unwrap();
    let attempts = Arc::new(Attempts::default());
    place(&mut conn, &attempts, 8, true);
    conn.execute(
        "UPDATE signals_jobs SET state = 'running', attempt = 1, token = 42, lease_until = 0
         WHERE handler = 'sqlite::send_welcome'",
        [],
    )
    .unwrap();
    worker(&path, &attempts)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM emails"), 1);
    let (state, attempt): (String, i64) = conn
        .query_row(
            "SELECT state, attempt FROM signals_jobs WHERE handler = 'sqlite::send_welcome'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), attempt),
        ("done", 2),
        "the stalled claim's attempt counted"
    );
}

#[test]
fn a_manual_clock_drives_retry_backoff() {
    let (_dir, path) = database();
    let mut conn = Connection::open(&path).unwrap();
    let attempts = Arc::new(Attempts::default());
    let tx = conn.transaction().unwrap();
    notify(
        &Flaky { fail_times: 1 },
        &mut AppCtx {
            tx: &tx,
            attempts: &attempts,
        },
    )
    .unwrap();
    tx.commit().unwrap();
    // Jobs are written with the system's time; the worker's clock starts there and stands still.
    let start = Clock::system().now();
    let clock = Clock::manual(start);
    let running = worker(&path, &attempts)
        .clock(clock.clone())
        .retry(RetryPolicy {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(60),
        })
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for(|| attempts.sent.load(Ordering::SeqCst) == 1);
    let run_at = || count(&conn, "SELECT run_at FROM signals_jobs");
    wait_for(|| {
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'pending'",
        ) == 1
    });
    assert!((start..=start + 60_000).contains(&run_at()));
    // Stuck until the clock passes the backoff.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(61));
    wait_for(|| {
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'",
        ) == 1
    });
    assert_eq!(attempts.sent.load(Ordering::SeqCst), 2);
    running.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn purge_deletes_only_old_done_jobs() {
    let (_dir, path) = database();
    let mut conn = Connection::open(&path).unwrap();
    let attempts = Arc::new(Attempts::default());
    place(&mut conn, &attempts, 2, true);
    worker(&path, &attempts)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    let queue = Queue::open(&path).unwrap();
    // Done counts come from the counts the worker flushed, not from counting done rows.
    assert_eq!(queue.stats().unwrap().total(JobState::Done), 2);
    queue
        .connection()
        .execute(
            "INSERT INTO signals_job_counts (handler, shard, done) VALUES ('sqlite::send_welcome', 99, 40)",
            [],
        )
        .unwrap();
    assert_eq!(queue.stats().unwrap().total(JobState::Done), 42);
    assert_eq!(queue.purge_done(Duration::from_secs(3600)).unwrap(), 0);
    let later = Queue::open(&path)
        .unwrap()
        .with_clock(Clock::manual(i64::MAX / 2));
    assert_eq!(later.purge_done(Duration::from_secs(3600)).unwrap(), 2);
    assert_eq!(
        later.stats().unwrap().total(JobState::Done),
        40,
        "a purge takes its rows off the counts"
    );
}

/// Waits for `condition` with a deadline (no fixed sleeps for what can be observed).
fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Work for the crash and race tests: each attempt is counted on a connection of its own
/// (outside the job's transaction, like a mail provider that saw it), then the effect is
/// written in the job's transaction.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = WorkCtx<'_>)]
struct Work {
    n: i64,
}

struct WorkCtx<'a> {
    tx: &'a Transaction<'a>,
    attempts_db: &'a std::path::Path,
}

/// Where the worker counts attempts (a path: each attempt opens its own connection).
struct AttemptsDb(std::path::PathBuf);

impl Enqueue for WorkCtx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for WorkCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(WorkCtx {
            tx: job.transaction(),
            attempts_db: &job.state::<AttemptsDb>()?.0,
        })
    }
}

#[on(Work, queue = "work")]
fn do_work(sig: &Work, ctx: &mut WorkCtx<'_>) -> rusqlite::Result<()> {
    let outside = Connection::open(ctx.attempts_db)?;
    outside.busy_timeout(Duration::from_secs(10))?;
    outside.execute("INSERT INTO attempts (n) VALUES (?1)", [sig.n])?;
    std::thread::sleep(Duration::from_millis(3));
    ctx.tx
        .execute("INSERT INTO effects (n) VALUES (?1)", [sig.n])?;
    Ok(())
}

/// A database with `n` committed `Work` jobs.
fn work_database(n: i64) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, path) = database();
    let mut conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE attempts (n INTEGER); CREATE TABLE effects (n INTEGER);")
        .unwrap();
    let tx = conn.transaction().unwrap();
    for n in 0..n {
        notify(
            &Work { n },
            &mut WorkCtx {
                tx: &tx,
                attempts_db: &path,
            },
        )
        .unwrap();
    }
    tx.commit().unwrap();
    (dir, path)
}

fn work_worker(path: &std::path::Path) -> signals_queue::WorkerBuilder {
    Worker::builder(path)
        .state(AttemptsDb(path.to_owned()))
        .state(Arc::new(Attempts::default()))
        .lease(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(20))
}

/// Checks the end state: every job done, each effect written exactly once.
fn assert_each_effect_once(path: &std::path::Path, n: i64) -> i64 {
    let conn = Connection::open(path).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), n);
    assert_eq!(count(&conn, "SELECT COUNT(DISTINCT n) FROM effects"), n);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'"
        ),
        n
    );
    count(&conn, "SELECT COUNT(*) FROM attempts")
}

#[test]
fn two_workers_racing_on_one_table_run_every_job_exactly_once() {
    let (_dir, path) = work_database(200);
    let first = work_worker(&path).concurrency(2).build().unwrap();
    let second = work_worker(&path).concurrency(2).build().unwrap();
    let racing = std::thread::spawn(move || second.run_until_idle());
    first.run_until_idle().unwrap();
    racing.join().unwrap().unwrap();
    let attempts = assert_each_effect_once(&path, 200);
    assert_eq!(attempts, 200, "no job ran twice");
}

#[test]
fn shutdown_lets_running_jobs_finish_and_claims_nothing_it_does_not_start() {
    let (_dir, path) = work_database(40);
    let running = work_worker(&path)
        .concurrency(2)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    wait_for(|| count(&conn, "SELECT COUNT(*) FROM effects") >= 3);
    running.shutdown(Duration::from_secs(10)).unwrap();
    // Nothing is left running: finished jobs are done, and the rest were never claimed (a
    // fetch claims only for free slots), their attempts uncounted.
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'"
        ),
        0
    );
    let done = count(
        &conn,
        "SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'",
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), done);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'pending' AND attempt = 0"
        ),
        40 - done
    );
    work_worker(&path)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_each_effect_once(&path, 40);
}

/// The environment variable that turns this test binary into a worker process for the crash
/// test: its value is the database path.
const CHILD_WORKER: &str = "SIGNALS_QUEUE_TEST_CHILD_WORKER";

/// Runs as the child process of the crash test (and does nothing otherwise): a worker that runs
/// until it is killed.
#[test]
fn child_worker_process() {
    let Ok(path) = std::env::var(CHILD_WORKER) else {
        return;
    };
    let _running = work_worker(std::path::Path::new(&path))
        .concurrency(2)
        .build()
        .unwrap()
        .start()
        .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_worker_killed_with_sigkill_loses_no_job_and_doubles_no_effect() {
    let (_dir, path) = work_database(150);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_worker_process", "--exact", "--nocapture"])
        .env(CHILD_WORKER, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    wait_for(|| count(&conn, "SELECT COUNT(*) FROM effects") >= 20);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let running_at_kill = count(
        &conn,
        "SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'",
    );
    assert!(running_at_kill <= 2 * 8, "at most two claimed batches");
    // Another worker rescues the dead worker's jobs once their lease expires, and finishes.
    work_worker(&path)
        .concurrency(2)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    let attempts = assert_each_effect_once(&path, 150);
    assert!(
        attempts - 150 <= running_at_kill,
        "{attempts} attempts for 150 jobs, {running_at_kill} running at the kill"
    );
}

#[test]
fn the_catalog_shows_queued_handlers_with_their_queue() {
    let table = signals_core::catalog().to_string();
    assert!(
        table.contains("  sqlite::send_welcome [queue email]  "),
        "{table}"
    );
    assert!(
        table.contains("  sqlite::audit_even when |o| o.order_id % 2 == 0 [queue default]  "),
        "{table}"
    );
    let chart = signals_core::catalog().to_mermaid();
    assert!(chart.contains("priority 0, queue email"), "{chart}");
    let handler = signals_core::handlers::<OrderPlaced>()
        .find(|h| h.name() == "sqlite::send_welcome")
        .unwrap();
    assert_eq!(handler.queue(), Some("email"));
    let record_order = signals_core::handlers::<OrderPlaced>().next().unwrap();
    assert_eq!(record_order.queue(), None);
}

#[test]
fn a_locked_database_is_waited_out_and_no_job_is_lost_or_doubled() {
    let (_dir, path) = work_database(60);
    let mut blocker = Connection::open(&path).unwrap();
    let running = work_worker(&path)
        .busy_timeout(Duration::from_millis(20))
        .concurrency(2)
        .build()
        .unwrap()
        .start()
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    wait_for(|| count(&conn, "SELECT COUNT(*) FROM effects") >= 10);
    // Lock it again mid-run, for ten busy timeouts: claims, completions and heartbeats are
    // refused with SQLITE_BUSY meanwhile, and retried.
    let lock = blocker
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    lock.commit().unwrap();
    running.wait_idle().unwrap();
    running.shutdown(Duration::from_secs(10)).unwrap();
    let attempts = assert_each_effect_once(&path, 60);
    assert!(attempts >= 60);
}

/// Where `read_wait_write` finds the database, to write from another connection mid-attempt.
static DATABASE: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>)]
struct Reconciled;

/// Reads, waits on "the network" (meanwhile, on its first attempt, another connection commits,
/// as the worker's own heartbeat does), then writes.
#[on(Reconciled, queue, name = "read-wait-write")]
fn read_wait_write(_: &Reconciled, ctx: &mut AppCtx<'_>) -> rusqlite::Result<()> {
    let attempt = ctx.attempts.sent.fetch_add(1, Ordering::SeqCst) + 1;
    let orders: i64 = ctx
        .tx
        .query_row("SELECT COUNT(*) FROM orders", [], |row| row.get(0))?;
    if attempt == 1 {
        let path = DATABASE.lock().unwrap().clone().unwrap();
        Connection::open(path)
            .unwrap()
            .execute("INSERT INTO orders (id) VALUES (99)", [])
            .unwrap();
    }
    ctx.tx
        .execute("INSERT INTO audit (order_id) VALUES (?1)", [orders])?;
    Ok(())
}

/// SQLite has one writer: a handler that reads, then writes after another connection committed
/// (`SQLITE_BUSY_SNAPSHOT`) is never re-run in place. Its attempt fails once, with an error that
/// says how to reorder the handler, and the retry runs it once more.
#[test]
fn a_handler_that_reads_then_writes_after_another_commit_fails_its_attempt_with_a_clear_error() {
    let (_dir, path) = database();
    *DATABASE.lock().unwrap() = Some(path.clone());
    let attempts = Arc::new(Attempts::default());
    commit_and_drain(&path, &attempts, &Reconciled);
    let conn = Connection::open(&path).unwrap();
    let (state, attempt, error): (String, i64, String) = conn
        .query_row(
            "SELECT state, attempt, last_error FROM signals_jobs WHERE handler = 'read-wait-write'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(state, "done");
    // (A later attempt may meet the worker's own heartbeat between its read and its write, and
    // fail the same way: each attempt still runs the handler once.)
    assert!(attempt >= 2, "the first attempt failed");
    assert_eq!(
        attempts.sent.load(Ordering::SeqCst) as i64,
        attempt,
        "one run per attempt, never a silent re-run"
    );
    assert!(error.contains("SQLITE_BUSY_SNAPSHOT"), "{error}");
    assert!(error.contains("before its first statement"), "{error}");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM audit"),
        1,
        "the second attempt's write"
    );
}
