//! The operator's features on the sync path (rusqlite `Queue`, thread `Worker`): attempts kept,
//! snooze and discard, a delayed job, a paused queue, a running job cancelled (its thread runs
//! on, its commit is refused), and the counts by queue.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};
use signals_core::{notify, on, BoxError, Signal};
use signals_queue::{
    Action, Discard, Enqueue, FromJob, JobFilter, JobScope, JobStatus, Queue, RetryPolicy, Snooze,
    Worker, WorkerBuilder,
};

struct Ctx<'a> {
    tx: &'a Transaction<'a>,
}

impl Enqueue for Ctx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for Ctx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(Ctx {
            tx: job.transaction(),
        })
    }
}

static FLAKY: AtomicUsize = AtomicUsize::new(0);
static LONG_STARTED: AtomicBool = AtomicBool::new(false);
static LONG_RELEASE: AtomicBool = AtomicBool::new(false);

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Ping;

/// Fails, snoozes, then writes its effect.
#[on(Ping, queue = "ping", max_attempts = 2)]
fn ping(_: &Ping, ctx: &mut Ctx<'_>) -> Result<(), BoxError> {
    match FLAKY.fetch_add(1, Ordering::SeqCst) {
        0 => Err("the provider timed out".into()),
        1 => Err(Snooze::after(Duration::from_millis(20))
            .because("429")
            .into()),
        _ => {
            ctx.tx.execute("INSERT INTO effects (n) VALUES (1)", [])?;
            Ok(())
        }
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Gone;

#[on(Gone, queue = "ping")]
fn gone(_: &Gone, _: &mut Ctx<'_>) -> Result<(), Discard> {
    Err(Discard::because("no such account"))
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Later;

#[on(Later, queue = "later", delay = "1h")]
fn later(_: &Later, _: &mut Ctx<'_>) {}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Long;

/// Waits to be released (holding no lock: SQLite has one writer, and an operator's cancel
/// writes), then writes and commits (or tries to).
#[on(Long, queue = "long")]
fn long(_: &Long, ctx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    LONG_STARTED.store(true, Ordering::SeqCst);
    while !LONG_RELEASE.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    ctx.tx.execute("INSERT INTO effects (n) VALUES (2)", [])?;
    Ok(())
}

fn database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let conn = Connection::open(&path).unwrap();
    signals_queue::migrate(&conn).unwrap();
    conn.execute_batch("CREATE TABLE effects (n INTEGER NOT NULL)")
        .unwrap();
    (dir, path)
}

fn commit<S>(path: &std::path::Path, signal: &S)
where
    S: for<'c> Signal<Context<'c> = Ctx<'c>> + signals_core::SyncSignal,
{
    let mut conn = Connection::open(path).unwrap();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    notify(signal, &mut Ctx { tx: &tx }).unwrap();
    tx.commit().unwrap();
}

fn worker(path: &std::path::Path) -> WorkerBuilder {
    Worker::builder(path)
        .concurrency(2)
        .poll_interval(Duration::from_millis(20))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        })
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn effects(path: &std::path::Path, n: i64) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM effects WHERE n = ?1", [n], |row| {
            row.get(0)
        })
        .unwrap()
}

#[test]
fn the_thread_worker_keeps_attempts_snoozes_discards_delays_pauses_and_cancels() {
    let (_dir, path) = database();
    let queue = Queue::open(&path).unwrap();

    // A paused queue: nothing of it runs, and the worker is idle anyway.
    queue.pause("ping").unwrap();
    commit(&path, &Ping);
    commit(&path, &Gone);
    commit(&path, &Later);
    let running = worker(&path).build().unwrap().start().unwrap();
    running.wait_idle().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(FLAKY.load(Ordering::SeqCst), 0, "the paused queue ran");
    let overview = queue.overview().unwrap();
    assert!(overview.queues["ping"].paused);
    assert_eq!(overview.queues["ping"].counts.pending, 2);
    assert_eq!(overview.queues["later"].counts.scheduled, 1);

    // Resumed: a failure, a snooze (its attempt given back), then success; the discard.
    queue.resume("ping").unwrap();
    wait_for("the ping job", || effects(&path, 1) == 1);
    running.wait_idle().unwrap();
    let ping = queue
        .jobs(&JobFilter::new().handler("sqlite_operate::ping"), 0, 1)
        .unwrap();
    assert_eq!((ping[0].state, ping[0].attempt), (JobStatus::Done, 2));
    let history = queue.job(ping[0].id).unwrap().unwrap().attempts;
    let errors: Vec<Option<&str>> = history.iter().map(|a| a.error.as_deref()).collect();
    assert_eq!(
        errors,
        [
            Some("the provider timed out"),
            Some("snoozed for 20ms: 429"),
            None
        ]
    );
    let pid = format!(":{}", std::process::id());
    assert!(history[2].worker.as_deref().unwrap().ends_with(&pid));
    let counts = queue.overview().unwrap().queues["ping"].counts.clone();
    assert_eq!((counts.done, counts.discarded, counts.dead), (1, 1, 0));

    // A running job cancelled: the thread runs on, but its commit is refused.
    commit(&path, &Long);
    wait_for("the long job to start", || {
        LONG_STARTED.load(Ordering::SeqCst)
    });
    let long = queue
        .jobs(&JobFilter::new().state(JobStatus::Running), 0, 1)
        .unwrap();
    assert_eq!(
        queue.act_on(Action::Cancel, &[long[0].id], false).unwrap(),
        1
    );
    std::thread::sleep(Duration::from_millis(200));
    LONG_RELEASE.store(true, Ordering::SeqCst);
    running.wait_idle().unwrap();
    let stats = running.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        effects(&path, 2),
        0,
        "the cancelled job's writes rolled back"
    );
    let job = queue.job(long[0].id).unwrap().unwrap();
    assert_eq!(job.summary.state, JobStatus::Cancelled);
    assert_eq!((stats.snoozed, stats.discarded), (1, 1));
    assert_eq!(
        queue.overview().unwrap().queues["later"].counts.scheduled,
        1
    );
}
