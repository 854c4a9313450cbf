//! Periodic signals on the thread worker (SQLite): the fleet's leader fires each tick once, in a
//! transaction that first records it; a leader that shuts down hands over at once; a failed
//! tick is fired again; ticks missed while no worker ran are fired as one.
//!
//! (`examples/shop/tests/shop.rs` races three worker processes of the async worker on SQLite
//! and PostgreSQL and SIGKILLs the leader.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, Transaction};
use signals_core::{on, BoxError, Signal};
use signals_queue::{FromJob, JobScope, Worker};

/// How many ticks to fail on purpose (each fails once).
#[derive(Default)]
struct Failures {
    left: AtomicUsize,
}

struct TickCtx<'a> {
    tx: &'a Transaction<'a>,
    failures: &'a Failures,
    worker: &'a WorkerName,
}

/// Which worker (of the two in this process) built the context.
struct WorkerName(&'static str);

impl<'c> FromJob<'c> for TickCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(TickCtx {
            tx: job.transaction(),
            failures: job.state::<Arc<Failures>>()?,
            worker: job.state::<WorkerName>()?,
        })
    }
}

#[derive(Signal, Debug)]
#[signal(context = TickCtx<'_>, every = "1s")]
struct EverySecond {
    #[signal(tick)]
    at: SystemTime,
    /// Filled with its default: only the tick field is set.
    note: String,
}

#[on(EverySecond)]
fn record(sig: &EverySecond, ctx: &mut TickCtx<'_>) -> Result<(), BoxError> {
    assert!(sig.note.is_empty());
    let millis = sig.at.duration_since(UNIX_EPOCH)?.as_millis() as i64;
    ctx.tx.execute(
        "INSERT INTO ticks (tick_ms, worker) VALUES (?1, ?2)",
        (millis, ctx.worker.0),
    )?;
    // Fails after writing: the row and the tick's record roll back together.
    if ctx
        .failures
        .left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
    {
        return Err("the report service is down".into());
    }
    Ok(())
}

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    signals_queue::migrate(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS ticks (tick_ms INTEGER NOT NULL, worker TEXT NOT NULL)",
    )
    .unwrap();
    conn
}

fn ticks(conn: &Connection) -> Vec<(i64, String)> {
    let mut statement = conn
        .prepare("SELECT tick_ms, worker FROM ticks ORDER BY tick_ms")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn worker(path: &std::path::Path, name: &'static str, failures: &Arc<Failures>) -> Worker {
    Worker::builder(path)
        .state(Arc::clone(failures))
        .state(WorkerName(name))
        .build()
        .unwrap()
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn two_workers_fire_each_tick_once_and_a_leader_that_shuts_down_hands_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.db");
    let conn = open(&path);
    let failures = Arc::new(Failures::default());
    let first = worker(&path, "first", &failures).start().unwrap();
    wait_for(|| !ticks(&conn).is_empty()); // the first worker leads
    let second = worker(&path, "second", &failures).start().unwrap();
    wait_for(|| ticks(&conn).len() >= 3);
    let handed = now_ms();
    first.shutdown(Duration::from_secs(5)).unwrap(); // resigns
    wait_for(|| ticks(&conn).iter().any(|(tick, _)| *tick > handed + 1_000));
    second.shutdown(Duration::from_secs(5)).unwrap();
    let ticks = ticks(&conn);
    let times: Vec<i64> = ticks.iter().map(|(tick, _)| *tick).collect();
    let mut distinct = times.clone();
    distinct.dedup();
    assert_eq!(distinct, times, "a tick fired twice: {ticks:?}");
    assert!(times.iter().all(|tick| tick % 1_000 == 0), "{ticks:?}");
    // A resigning leader frees the row at once and the other worker takes it at its next
    // renewal (within a second) and fires then: the tick that fell in between fires late,
    // and at most one falls out when the handover straddles two.
    assert!(
        times.windows(2).all(|pair| pair[1] - pair[0] <= 2_000),
        "{ticks:?}"
    );
    assert_eq!(ticks.first().unwrap().1, "first");
    assert_eq!(ticks.last().unwrap().1, "second");
}

#[test]
fn a_failed_tick_rolls_back_and_is_fired_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.db");
    let conn = open(&path);
    let failures = Arc::new(Failures {
        left: AtomicUsize::new(1),
    });
    let running = worker(&path, "only", &failures).start().unwrap();
    wait_for(|| ticks(&conn).len() >= 2);
    running.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(failures.left.load(Ordering::SeqCst), 0, "one tick failed");
    let ticks = ticks(&conn);
    let times: Vec<i64> = ticks.iter().map(|(tick, _)| *tick).collect();
    // The failed attempt's row rolled back with the tick's record; the tick fired again (as
    // itself, or as the next one if a second had passed): no row is doubled.
    let mut distinct = times.clone();
    distinct.dedup();
    assert_eq!(distinct, times, "{ticks:?}");
    let recorded: i64 = conn
        .query_row("SELECT COUNT(*) FROM signals_ticks", [], |row| row.get(0))
        .unwrap();
    assert_eq!(recorded as usize, ticks.len(), "one record per fired tick");
}

#[test]
fn ticks_missed_while_no_worker_ran_are_fired_once_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.db");
    let conn = open(&path);
    // The last tick fired a minute ago, then every worker stopped.
    let path_of_signal = signals_core::catalog().get::<EverySecond>().path();
    let long_ago = (now_ms() / 1_000 - 60) * 1_000;
    conn.execute(
        "INSERT INTO signals_ticks (signal, tick_at, fired_at, worker) VALUES (?1, ?2, ?2, 0)",
        (path_of_signal, long_ago),
    )
    .unwrap();
    let started = now_ms();
    let running = worker(&path, "only", &Arc::default()).start().unwrap();
    wait_for(|| !ticks(&conn).is_empty());
    running.shutdown(Duration::from_secs(5)).unwrap();
    let ticks = ticks(&conn);
    let (first, _) = ticks[0];
    // Fired at once, as the latest tick due (not the 59 missed ones, one by one).
    assert!(
        first >= started - 1_000 && first <= started + 1_000,
        "{first} vs {started}: {ticks:?}"
    );
    assert!(ticks.len() <= 3, "{ticks:?}");
}

#[test]
fn the_catalog_shows_the_schedule() {
    let info = signals_core::catalog().get::<EverySecond>();
    assert_eq!(info.schedule(), Some("every 1s"));
    let listing = signals_core::catalog().to_string();
    assert!(listing.contains("every 1s; 1 handler"), "{listing}");
}

#[test]
fn the_leader_prunes_finished_jobs_older_than_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.db");
    let conn = open(&path);
    let day = 24 * 3600 * 1000;
    let now = now_ms();
    for (state, finished_at) in [
        ("done", now - 2 * day),
        ("done", now - 2 * day),
        ("done", now - 1_000),
        ("dead", now - 15 * day),
        ("dead", now - 2 * day),
    ] {
        conn.execute(
            "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, state,
                                       max_attempts, run_at, created_at, finished_at)
             VALUES ('e', 'S', 'app::h', 'default', 0, '{}', ?1, 1, 0, ?2, ?2)",
            (state, finished_at),
        )
        .unwrap();
    }
    let running = worker(&path, "only", &Arc::default()).start().unwrap();
    let count = |state: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM signals_jobs WHERE state = ?1",
            [state],
            |row| row.get(0),
        )
        .unwrap()
    };
    wait_for(|| count("done") == 1 && count("dead") == 1);
    running.shutdown(Duration::from_secs(5)).unwrap();
}

/// The thread worker's leader announces a death to `#[on(JobDead)]` handlers, once.
#[on(signals_queue::JobDead)]
fn record_death(
    dead: &signals_queue::JobDead,
    ctx: &mut signals_queue::JobDeadCtx<'_>,
) -> rusqlite::Result<()> {
    ctx.transaction().execute(
        "INSERT INTO deaths (job_id, handler, error) VALUES (?1, ?2, ?3)",
        (dead.id, &dead.handler, &dead.error),
    )?;
    Ok(())
}

#[test]
fn the_leader_announces_each_dead_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.db");
    let conn = open(&path);
    conn.execute_batch("CREATE TABLE deaths (job_id INTEGER, handler TEXT, error TEXT)")
        .unwrap();
    let now = now_ms();
    conn.execute(
        "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, state,
                                   attempt, max_attempts, run_at, created_at, finished_at,
                                   last_error)
         VALUES ('e', 'S', 'app::charge', 'billing', 0, '{}', 'dead', 3, 3, 0, ?1, ?1,
                 'the card was declined')",
        [now],
    )
    .unwrap();
    let running = worker(&path, "only", &Arc::default()).start().unwrap();
    let deaths = || -> Vec<(i64, String, String)> {
        let mut statement = conn
            .prepare("SELECT job_id, handler, error FROM deaths")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    wait_for(|| !deaths().is_empty());
    std::thread::sleep(Duration::from_millis(1_500)); // the leader's next rounds
    running.shutdown(Duration::from_secs(5)).unwrap();
    let deaths = deaths();
    assert_eq!(deaths.len(), 1, "announced once: {deaths:?}");
    assert_eq!(deaths[0].1, "app::charge");
    assert_eq!(deaths[0].2, "the card was declined");
}
