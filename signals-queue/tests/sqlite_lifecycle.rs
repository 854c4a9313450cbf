//! The thread worker's job life cycle, on SQLite through rusqlite: claim order, batched
//! completions, a timed-out handler fenced off, and a lease taken away from a running job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};
use signals_core::{notify, on, BoxError, Signal};
use signals_queue::{Enqueue, FromJob, JobScope, RetryPolicy, Worker, WorkerBuilder};

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

fn effect(ctx: &Ctx<'_>, n: i64) -> rusqlite::Result<()> {
    ctx.tx.execute("INSERT INTO effects (n) VALUES (?1)", [n])?;
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

/// Notifies each of `signals` in one transaction, and commits.
fn commit<S>(path: &std::path::Path, signals: &[S])
where
    S: for<'c> Signal<Context<'c> = Ctx<'c>> + signals_core::SyncSignal,
{
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for signal in signals {
        notify(signal, &mut Ctx { tx: &tx }).unwrap();
    }
    tx.commit().unwrap();
}

fn count(path: &std::path::Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

fn worker(path: &std::path::Path) -> WorkerBuilder {
    Worker::builder(path)
        .poll_interval(Duration::from_millis(20))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        })
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------

static RAN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>)]
struct Routine;

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>)]
struct Urgent;

#[on(Routine, queue)]
fn routine(_: &Routine, _: &mut Ctx<'_>) {
    RAN.lock().unwrap().push("routine");
}

#[on(Urgent, queue, priority = 10)]
fn urgent(_: &Urgent, _: &mut Ctx<'_>) {
    RAN.lock().unwrap().push("urgent");
}

#[test]
fn a_higher_priority_job_written_last_runs_first() {
    let (_dir, path) = database();
    commit(&path, &vec![Routine; 7]);
    commit(&path, &[Urgent]);
    worker(&path).build().unwrap().run_until_idle().unwrap();
    let ran = RAN.lock().unwrap().clone();
    assert_eq!(ran.len(), 8);
    assert_eq!(ran[0], "urgent", "{ran:?}");
}

// ---------------------------------------------------------------------------------------------

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>)]
struct Ping;

#[on(Ping, queue)]
fn pong(_: &Ping, _: &mut Ctx<'_>) {}

#[test]
fn jobs_that_write_nothing_complete_many_to_a_statement() {
    let (_dir, path) = database();
    commit(&path, &vec![Ping; 300]);
    let running = worker(&path)
        .concurrency(8)
        .build()
        .unwrap()
        .start()
        .unwrap();
    running.wait_idle().unwrap();
    let stats = running.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.completed_in_batches, 300, "{stats:?}");
    assert_eq!(stats.completed_with_writes, 0, "{stats:?}");
    assert!(stats.flushes <= 300 / 5, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Stuck;

static STUCK_ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

/// The first attempt sleeps past its timeout, then writes; the second writes at once.
#[on(Stuck, queue, timeout = "200ms")]
fn stuck(_: &Stuck, ctx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    let attempt = STUCK_ATTEMPTS.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt == 1 {
        std::thread::sleep(Duration::from_millis(1500));
    }
    effect(ctx, attempt as i64)
}

#[test]
fn a_thread_past_its_timeout_is_fenced_off_and_its_job_retried_on_another() {
    let (_dir, path) = database();
    commit(&path, &[Stuck]);
    let start = Instant::now();
    // Idle once the retry is done; shutdown then waits for the stuck thread's late attempt.
    worker(&path)
        .concurrency(2)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "the late attempt ended"
    );
    assert_eq!(STUCK_ATTEMPTS.load(Ordering::SeqCst), 2);
    // The late first attempt's write rolled back: its completion was refused.
    assert_eq!(count(&path, "SELECT COUNT(*) FROM effects"), 1);
    assert_eq!(count(&path, "SELECT MIN(n) FROM effects"), 2);
    let error: String = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT last_error FROM signals_jobs WHERE state = 'done' AND attempt = 2",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(error, "the handler timed out after 200ms");
}

// ---------------------------------------------------------------------------------------------

static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
static FENCED_STARTS: AtomicUsize = AtomicUsize::new(0);

fn wait_at_gate() {
    let (open, opened) = &GATE;
    let mut open = open.lock().unwrap();
    while !*open {
        open = opened.wait(open).unwrap();
    }
}

fn set_gate(to: bool) {
    let (open, opened) = &GATE;
    *open.lock().unwrap() = to;
    opened.notify_all();
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Fenced {
    writes: bool,
    fail: bool,
}

/// The first attempt waits at the gate, then writes (or not) and succeeds (or fails); later
/// attempts write and succeed at once.
#[on(Fenced, queue)]
fn fenced(sig: &Fenced, ctx: &mut Ctx<'_>) -> Result<(), BoxError> {
    let attempt = FENCED_STARTS.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt == 1 {
        wait_at_gate();
        if sig.writes {
            effect(ctx, 1)?;
        }
        if sig.fail {
            return Err("the first attempt failed, after its lease was taken away".into());
        }
        return Ok(());
    }
    effect(ctx, attempt as i64)?;
    Ok(())
}

#[test]
fn a_worker_whose_lease_was_taken_away_can_neither_complete_nor_fail_the_job() {
    for (writes, fail) in [(true, false), (false, false), (true, true)] {
        let name = format!("writes: {writes}, fails: {fail}");
        let (_dir, path) = database();
        set_gate(false);
        FENCED_STARTS.store(0, Ordering::SeqCst);
        commit(&path, &[Fenced { writes, fail }]);
        let a = worker(&path)
            .lease(Duration::from_secs(60))
            .build()
            .unwrap()
            .start()
            .unwrap();
        wait_for("A's attempt", || FENCED_STARTS.load(Ordering::SeqCst) == 1);
        // A's maintenance renews the lease as it starts, then every 20 s (a third of it): wait
        // for that first renewal, which would otherwise put back the row deleted below.
        wait_for("A's first renewal", || {
            count(&path, "SELECT MAX(beats) FROM signals_workers") >= 2
        });
        // A's lease is gone: a rescue takes the job back and worker B runs it.
        Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM signals_workers", [])
            .unwrap();
        let b = worker(&path).build().unwrap().start().unwrap();
        wait_for("B to complete the job", || {
            count(
                &path,
                "SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'",
            ) == 1
        });
        b.shutdown(Duration::from_secs(10)).unwrap();
        set_gate(true);
        a.shutdown(Duration::from_secs(10)).unwrap();
        assert_eq!(count(&path, "SELECT COUNT(*) FROM effects"), 1, "{name}");
        assert_eq!(count(&path, "SELECT MIN(n) FROM effects"), 2, "{name}");
        assert_eq!(
            count(
                &path,
                "SELECT COUNT(*) FROM signals_jobs WHERE state = 'done' AND attempt = 2"
            ),
            1,
            "{name}: B's completion stands"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A failure the database refuses to record.

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct FailsOnce;

static FAILS_ONCE: AtomicUsize = AtomicUsize::new(0);

#[on(FailsOnce, queue)]
fn fails_once(_: &FailsOnce, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    match FAILS_ONCE.fetch_add(1, Ordering::SeqCst) {
        0 => Err("the provider is down".into()),
        _ => Ok(()),
    }
}

/// A trigger refuses every write of a failed attempt for two seconds, longer than the
/// worker's lease (600 ms): the executor tries until the lease would lapse, then maintenance
/// finds the running row of its own worker that nothing holds and fails it the normal way once
/// the database accepts it. The job is retried and done; the worker gets idle.
#[test]
fn a_failure_the_database_refuses_to_record_is_recorded_later_not_left_running() {
    let (_dir, path) = database();
    commit(&path, &[FailsOnce]);
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE refuse_until (until_ms INTEGER NOT NULL);
             CREATE TRIGGER refuse_failures BEFORE UPDATE ON signals_jobs
                 WHEN OLD.state = 'running' AND NEW.state NOT IN ('running', 'done')
                  AND (SELECT until_ms FROM refuse_until)
                      > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
             INSERT INTO refuse_until
                 VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + 2000)",
        )
        .unwrap();
    let started = Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    let worker = worker(&path)
        .lease(Duration::from_millis(600))
        .build()
        .unwrap();
    std::thread::spawn(move || done.send(worker.run_until_idle()));
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the job stayed running")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(FAILS_ONCE.load(Ordering::SeqCst), 2);
    let conn = Connection::open(&path).unwrap();
    let (state, error): (String, String) = conn
        .query_row("SELECT state, last_error FROM signals_jobs", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(state, "done");
    assert!(error.contains("could not record"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// A file of the previous release.

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Record {
    n: i64,
}

#[on(Record, queue)]
fn record(sig: &Record, ctx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    effect(ctx, sig.n)
}

/// A SQLite file as the release before the done counts left it (level 3, no counts table, no
/// inbox time index): the thread worker refuses it at `build()` until it is migrated.
#[test]
fn a_file_of_the_previous_release_is_refused_until_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("previous.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE signals_queue_schema (version INTEGER NOT NULL);
         CREATE TABLE signals_jobs (
             id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, signal TEXT NOT NULL,
             handler TEXT NOT NULL, queue TEXT NOT NULL, priority INTEGER NOT NULL,
             payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
             attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
             run_at INTEGER NOT NULL, lease_until INTEGER, token INTEGER, last_error TEXT,
             created_at INTEGER NOT NULL, finished_at INTEGER, worker INTEGER,
             crashes INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE signals_workers (id INTEGER PRIMARY KEY, lease_until INTEGER NOT NULL,
             lease_ms INTEGER NOT NULL, beats INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE effects (n INTEGER NOT NULL);
         INSERT INTO signals_queue_schema (version) VALUES (3)",
    )
    .unwrap();
    let Err(error) = worker(&path).build() else {
        panic!("the worker started on an unmigrated file");
    };
    assert!(
        matches!(
            error,
            signals_queue::Error::SchemaOutdated {
                found: Some(3),
                needed: 8
            }
        ),
        "{error}"
    );
    signals_queue::migrate(&conn).unwrap();
    commit(&path, &[Record { n: 7 }]);
    worker(&path).build().unwrap().run_until_idle().unwrap();
    assert_eq!(count(&path, "SELECT COUNT(*) FROM effects WHERE n = 7"), 1);
    assert_eq!(count(&path, "SELECT SUM(done) FROM signals_job_counts"), 1);
    assert_eq!(
        count(&path, "SELECT MAX(version) FROM signals_queue_schema"),
        3
    );
}

// ---------------------------------------------------------------------------------------------
// A transaction that holds the write lock longer than a lease.

/// Opened, then shut by the test: the gated handlers wait for it.
static HOG_GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
static AT_HOG_GATE: AtomicUsize = AtomicUsize::new(0);

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>)]
struct GatedBesideHog;

/// Waits at the gate, writing nothing (no lock held).
#[on(GatedBesideHog, queue)]
fn gated_beside_hog(_: &GatedBesideHog, _: &mut Ctx<'_>) {
    AT_HOG_GATE.fetch_add(1, Ordering::SeqCst);
    let (open, opened) = &HOG_GATE;
    let mut open = open.lock().unwrap();
    while !*open {
        open = opened.wait(open).unwrap();
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Hog;

/// Writes, then holds the file's write lock for two seconds (three leases).
#[on(Hog, queue)]
fn hog(_: &Hog, ctx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    effect(ctx, 1)?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// A handler holds the write lock for three leases: no worker could renew its lease meanwhile,
/// and no rescuer could look either. When the lock goes, the rescuer sees that it was held up
/// itself, and rescues no job of the live workers (before: the jobs running beside the hog were
/// rescued as crashed, and ran twice).
#[test]
fn a_long_write_lock_gets_no_live_workers_jobs_rescued() {
    let (_dir, path) = database();
    let lease = Duration::from_millis(600);
    commit(&path, &[GatedBesideHog]);
    let b = worker(&path).lease(lease).build().unwrap().start().unwrap();
    wait_for("B at the gate", || AT_HOG_GATE.load(Ordering::SeqCst) == 1);
    commit(&path, &[Hog]);
    commit(&path, &[GatedBesideHog]);
    let a = worker(&path)
        .lease(lease)
        .concurrency(2)
        .build()
        .unwrap()
        .start()
        .unwrap();
    wait_for("the hog's write", || {
        count(&path, "SELECT COUNT(*) FROM effects") == 1
    });
    wait_for("A at the gate", || AT_HOG_GATE.load(Ordering::SeqCst) == 2);
    // Two leases after the hog's commit: time for any rescue to happen.
    std::thread::sleep(lease * 2);
    let crashed = count(&path, "SELECT COUNT(*) FROM signals_jobs WHERE crashes > 0");
    let (open, opened) = &HOG_GATE;
    *open.lock().unwrap() = true;
    opened.notify_all();
    a.wait_idle().unwrap();
    a.shutdown(Duration::from_secs(10)).unwrap();
    b.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(crashed, 0, "a live worker's job was rescued");
    assert_eq!(
        AT_HOG_GATE.load(Ordering::SeqCst),
        2,
        "a gated job ran twice"
    );
}
