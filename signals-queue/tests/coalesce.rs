//! Coalescing (`#[on(S, queue, coalesce = key)]`): while a job of the handler with the same key
//! has not started, a `notify` writes no second job — under concurrent writers too (a partial
//! unique index, not a read-then-write); a running job absorbs nothing; and a job that returns
//! to waiting (a failure's retry, an operator's retry, any statement) folds into a waiting one
//! of its key instead of breaking the index. On PostgreSQL and SQLite through sqlx (async) and
//! on rusqlite (the thread worker).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use signals_core::{notify, notify_async, on, BoxError, Signal};
use signals_queue::{
    Action, AsyncQueue, AsyncWorker, Enqueue, FromJob, JobScope, RetryPolicy, Worker,
};
use tokio::sync::Semaphore;

mod support;
use support::{wait_for, Ctx, Db};

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct ProductChanged {
    product_id: u64,
    /// Which edit this is (the job reads the latest state when it runs).
    edit: u32,
}

/// The products reindexed, in order.
static REINDEXED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Held by a test to keep a reindex running; each run takes a permit.
static GATE: Semaphore = Semaphore::const_new(0);
static AT_GATE: AtomicUsize = AtomicUsize::new(0);
/// How many runs fail (then each run takes one off).
static FAIL: AtomicUsize = AtomicUsize::new(0);
/// The gate is in use (by the tests that hold a run).
static GATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[on(ProductChanged, queue, coalesce = product_id, max_attempts = 3)]
async fn reindex(signal: &ProductChanged, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    if GATED.load(Ordering::SeqCst) {
        AT_GATE.fetch_add(1, Ordering::SeqCst);
        GATE.acquire().await?.forget();
    }
    if FAIL
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err("the search cluster timed out".into());
    }
    REINDEXED.lock().unwrap().push(signal.product_id);
    Ok(())
}

/// The tests share the handler's statics: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn reset() {
    REINDEXED.lock().unwrap().clear();
    AT_GATE.store(0, Ordering::SeqCst);
    FAIL.store(0, Ordering::SeqCst);
    GATED.store(false, Ordering::SeqCst);
    GATE.forget_permits(usize::MAX);
}

async fn changed(db: &Db, product_id: u64, edit: u32) {
    let mut tx = db.pool.begin().await.unwrap();
    notify_async(
        &ProductChanged { product_id, edit },
        &mut Ctx { tx: tx.tx() },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Jobs of `reindex` by state, as `(waiting, done, folded)`: waiting in any state a claim
/// reads or will read; folded: ended `cancelled` with the reason coalescing gives.
async fn jobs(db: &Db) -> (i64, i64, i64) {
    let waiting = db
        .count("SELECT COUNT(*) FROM signals_jobs WHERE state IN ('available', 'scheduled', 'pending')")
        .await;
    let done = db
        .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
        .await;
    let folded = db
        .count(
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'dead' AND outcome = 'cancelled'
             AND last_error LIKE 'coalesced: job % of the same key was waiting, and runs in its place'",
        )
        .await;
    (waiting, done, folded)
}

/// A job as the failure messages show it: id, state, outcome, key, last error.
type JobRow = (i64, String, Option<String>, Option<String>, Option<String>);

fn worker(db: &Db) -> signals_queue::AsyncWorkerBuilder {
    AsyncWorker::builder(db.pool.clone())
        .concurrency(4)
        .poll_interval(Duration::from_millis(20))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_edits_of_one_product_write_one_job_and_reindex_it_once() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        for edit in 0..10 {
            changed(&db, 4821, edit).await;
        }
        changed(&db, 7, 0).await;
        assert_eq!(jobs(&db).await, (2, 0, 0), "{name}: one job per product");
        worker(&db)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let mut reindexed = REINDEXED.lock().unwrap().clone();
        reindexed.sort_unstable();
        assert_eq!(reindexed, [7, 4821], "{name}");
        // Done jobs absorb nothing: the next edit writes a job.
        changed(&db, 4821, 10).await;
        assert_eq!(jobs(&db).await, (1, 2, 0), "{name}");
        db.drop_schema().await;
    }
}

/// Eight writers notify the same key at once, each in its own transaction held open a while: one
/// job, whoever commits first (the others' inserts wait for it on PostgreSQL, then write
/// nothing; SQLite has one writer at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_key_write_one_job() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        let writers = (0..8u32).map(|edit| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                loop {
                    let mut tx = pool.begin().await.unwrap();
                    let written = notify_async(
                        &ProductChanged {
                            product_id: 4821,
                            edit,
                        },
                        &mut Ctx { tx: tx.tx() },
                    )
                    .await;
                    match written {
                        Ok(()) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            tx.commit().await.unwrap();
                            return;
                        }
                        // SQLite: another writer holds the lock past the busy timeout.
                        Err(error) if error.to_string().contains("locked") => continue,
                        Err(error) => panic!("{error}"),
                    }
                }
            })
        });
        for writer in writers.collect::<Vec<_>>() {
            writer.await.unwrap();
        }
        assert_eq!(jobs(&db).await, (1, 0, 0), "{name}");
        db.drop_schema().await;
    }
}

/// A running job absorbs nothing: an edit while it runs writes a job of its own. That job then
/// waits when the running one fails: the failed one folds into it (one job runs, with the
/// latest edit), instead of a second waiting job of one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_absorbs_nothing_and_folds_into_the_waiting_one_when_it_fails() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        GATED.store(true, Ordering::SeqCst);
        FAIL.store(1, Ordering::SeqCst);
        changed(&db, 4821, 0).await;
        let running = worker(&db).concurrency(1).build().await.unwrap().start();
        wait_for("the first reindex to start", || async {
            AT_GATE.load(Ordering::SeqCst) == 1
        })
        .await;
        changed(&db, 4821, 1).await;
        assert_eq!(
            jobs(&db).await,
            (1, 0, 0),
            "{name}: a new job beside the running one"
        );
        GATE.add_permits(10);
        running.wait_idle().await.unwrap();
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(*REINDEXED.lock().unwrap(), [4821], "{name}: reindexed once");
        assert_eq!(jobs(&db).await, (0, 1, 1), "{name}: the failed job folded");
        let first = db
            .count("SELECT CAST(attempt AS BIGINT) FROM signals_jobs WHERE state = 'dead'")
            .await;
        assert_eq!(first, 1, "{name}: the folded job keeps its attempt");
        db.drop_schema().await;
    }
}

/// An operator's retry of a dead job whose key waits already: it folds (the count says it
/// changed), and one job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_retry_folds_into_the_waiting_job_of_its_key() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        changed(&db, 4821, 0).await;
        db.execute("UPDATE signals_jobs SET state = 'dead', attempt = 3, finished_at = created_at")
            .await;
        changed(&db, 4821, 1).await;
        let queue = AsyncQueue::new(db.pool.clone());
        let dead = queue.dead_jobs(0, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        let retried = queue
            .act_on(Action::Retry, &[dead[0].id], false)
            .await
            .unwrap();
        assert_eq!(retried, 1, "{name}");
        assert_eq!(jobs(&db).await, (1, 0, 1), "{name}");
        // And any statement that moves a job back to waiting: the rule is the database's. The
        // waiting job is claimed, a new edit writes a job, and a rescue gives the first back.
        db.execute("UPDATE signals_jobs SET state = 'running' WHERE outcome IS NULL")
            .await;
        changed(&db, 4821, 2).await;
        db.execute(match db.schema {
            Some(_) => "UPDATE signals_jobs SET state = 'available' WHERE state = 'running'",
            None => "UPDATE signals_jobs SET state = 'pending' WHERE state = 'running'",
        })
        .await;
        let rows: Vec<JobRow> = signals_queue::with_db!(&db.pool, |pool| sqlx::query_as(
            "SELECT id, state, outcome, coalesce_key, last_error FROM signals_jobs ORDER BY id"
        )
        .fetch_all(pool)
        .await
        .unwrap());
        assert_eq!(jobs(&db).await, (1, 0, 2), "{name}: {rows:?}");
        worker(&db)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(*REINDEXED.lock().unwrap(), [4821], "{name}");
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The thread worker, on rusqlite.

struct SyncCtx<'a> {
    tx: &'a Transaction<'a>,
}

impl Enqueue for SyncCtx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for SyncCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(SyncCtx {
            tx: job.transaction(),
        })
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = SyncCtx<'_>)]
struct PriceChanged {
    sku: String,
}

static REPRICED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[on(PriceChanged, queue, coalesce = |s| s.sku.to_lowercase())]
fn reprice(signal: &PriceChanged, _: &mut SyncCtx<'_>) {
    REPRICED.lock().unwrap().push(signal.sku.clone());
}

fn price_changed(path: &std::path::Path, sku: &str) {
    let mut conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    notify(&PriceChanged { sku: sku.into() }, &mut SyncCtx { tx: &tx }).unwrap();
    tx.commit().unwrap();
}

#[test]
fn the_thread_worker_runs_one_job_per_key_whatever_the_writers() {
    let _serial = SERIAL.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    signals_queue::migrate(&Connection::open(&path).unwrap()).unwrap();
    std::thread::scope(|scope| {
        for sku in ["AB-1", "ab-1", "Ab-1", "cd-2", "AB-1", "CD-2"] {
            let path = &path;
            scope.spawn(move || price_changed(path, sku));
        }
    });
    let conn = Connection::open(&path).unwrap();
    let waiting: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM signals_jobs WHERE state = 'pending'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        waiting, 2,
        "one job per key (the closure's key: lower case)"
    );
    Worker::builder(&path)
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_eq!(REPRICED.lock().unwrap().len(), 2);
}
