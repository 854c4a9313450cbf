//! Queues with limits of their own (`.queue("mail", 3)`): a queue's jobs run at most its limit at
//! once, beside the worker's `concurrency` that handlers without a queue share, on the async
//! worker (PostgreSQL and SQLite through sqlx) and on the thread worker (rusqlite).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};
use signals_core::{notify, notify_async, on, BoxError, Signal};
use signals_queue::{AsyncWorker, Enqueue, FromJob, JobScope, Worker};

mod support;
use support::{Ctx, Db};

/// How many jobs of one kind run now, and the most that ever ran at once.
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    ran: AtomicUsize,
}

impl Gauge {
    const fn new() -> Gauge {
        Gauge {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
        }
    }

    /// A job starts: returns the guard that ends it.
    fn enter(&'static self) -> Running {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        let together = now + self.other().now.load(Ordering::SeqCst);
        BOTH.max.fetch_max(together, Ordering::SeqCst);
        Running(self)
    }

    fn other(&'static self) -> &'static Gauge {
        match std::ptr::eq(self, &MAIL) {
            true => &PLAIN,
            false => &MAIL,
        }
    }

    fn reset(&self) {
        self.now.store(0, Ordering::SeqCst);
        self.max.store(0, Ordering::SeqCst);
        self.ran.store(0, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

struct Running(&'static Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
        self.0.ran.fetch_add(1, Ordering::SeqCst);
    }
}

/// The "mail" queue's jobs; the jobs of no queue; both kinds together (`max` only).
static MAIL: Gauge = Gauge::new();
static PLAIN: Gauge = Gauge::new();
static BOTH: Gauge = Gauge::new();

/// How long each job runs: long enough that every slot fills.
const RUN: Duration = Duration::from_millis(150);

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Mail;

#[on(Mail, queue = "mail")]
async fn send_mail(_: &Mail, _: &mut Ctx<'_>) {
    let _running = MAIL.enter();
    tokio::time::sleep(RUN).await;
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Plain;

#[on(Plain, queue)]
async fn plain(_: &Plain, _: &mut Ctx<'_>) {
    let _running = PLAIN.enter();
    tokio::time::sleep(RUN).await;
}

/// The jobs the tests write: `mails` of the "mail" queue and `plains` of none.
const MAILS: usize = 9;
const PLAINS: usize = 3;

/// The gauges are the process's: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn reset() {
    for gauge in [&MAIL, &PLAIN, &BOTH] {
        gauge.reset();
    }
    SUSPECT_ALONE.lock().unwrap().clear();
}

/// What both workers must show: the mail queue ran at its limit (3), never above; the others at
/// the worker's concurrency (1); and the two side by side.
fn assert_lanes(name: &str) {
    assert_eq!(MAIL.ran.load(Ordering::SeqCst), MAILS, "{name}");
    assert_eq!(PLAIN.ran.load(Ordering::SeqCst), PLAINS, "{name}");
    assert_eq!(
        MAIL.max(),
        3,
        "{name}: the mail queue runs 3 at once, no more"
    );
    assert_eq!(PLAIN.max(), 1, "{name}: the rest share `concurrency(1)`");
    assert_eq!(
        BOTH.max(),
        4,
        "{name}: the queue's slots are its own: mail and plain jobs run side by side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_runs_at_its_own_limit_beside_the_shared_concurrency() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        let mut tx = db.pool.begin().await.unwrap();
        for _ in 0..MAILS {
            notify_async(&Mail, &mut Ctx { tx: tx.tx() }).await.unwrap();
        }
        for _ in 0..PLAINS {
            notify_async(&Plain, &mut Ctx { tx: tx.tx() })
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        AsyncWorker::builder(db.pool.clone())
            .concurrency(1)
            .queue("mail", 3)
            .poll_interval(Duration::from_millis(50))
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_lanes(name);
        db.drop_schema().await;
    }
}

/// A queue paused while its lane has room: the other lane goes on; resumed, it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_with_a_lane_of_its_own_waits_while_the_others_run() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        let queue = signals_queue::AsyncQueue::new(db.pool.clone());
        queue.pause("mail").await.unwrap();
        let mut tx = db.pool.begin().await.unwrap();
        notify_async(&Mail, &mut Ctx { tx: tx.tx() }).await.unwrap();
        notify_async(&Plain, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let running = AsyncWorker::builder(db.pool.clone())
            .queue("mail", 2)
            .poll_interval(Duration::from_millis(50))
            .build()
            .await
            .unwrap()
            .start();
        support::wait_for("the plain job", || async {
            PLAIN.ran.load(Ordering::SeqCst) == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(MAIL.ran.load(Ordering::SeqCst), 0, "{name}: paused");
        queue.resume("mail").await.unwrap();
        support::wait_for("the mail job, resumed", || async {
            MAIL.ran.load(Ordering::SeqCst) == 1
        })
        .await;
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        db.drop_schema().await;
    }
}

/// Whether each run of a suspect ran alone in its worker (from its start to its end).
static SUSPECT_ALONE: std::sync::Mutex<Vec<bool>> = std::sync::Mutex::new(Vec::new());

/// A suspect's job starts: whether it has the worker to itself, and the guard that ends it.
fn suspect_starts() -> (bool, Running) {
    let running = MAIL.enter();
    (suspect_alone(), running)
}

/// A suspect's job ends: records whether it had the worker to itself throughout.
fn suspect_ends(at_start: bool) {
    let alone = at_start && suspect_alone();
    SUSPECT_ALONE.lock().unwrap().push(alone);
}

fn suspect_alone() -> bool {
    MAIL.now.load(Ordering::SeqCst) + PLAIN.now.load(Ordering::SeqCst) == 1
}

/// As a rescue leaves a job whose attempt was under way when its worker died: due, with a crash.
const MAKE_SUSPECT: &str =
    "UPDATE signals_jobs SET crashes = 1, run_at = created_at WHERE handler LIKE '%suspect%'";

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Suspect;

#[on(Suspect, queue = "mail")]
async fn suspect(_: &Suspect, _: &mut Ctx<'_>) {
    let (alone, _running) = suspect_starts();
    tokio::time::sleep(RUN).await;
    suspect_ends(alone);
}

/// What both workers must show of a suspect in a queue with a lane of its own: it ran once, with
/// the whole worker to itself (the other lanes held back), and every other job ran too.
fn assert_suspect_ran_alone(name: &str) {
    assert_eq!(*SUSPECT_ALONE.lock().unwrap(), [true], "{name}");
    assert_eq!(MAIL.ran.load(Ordering::SeqCst), MAILS + 1, "{name}");
    assert_eq!(PLAIN.ran.load(Ordering::SeqCst), PLAINS, "{name}");
    assert!(MAIL.max() <= 3, "{name}");
    assert_eq!(PLAIN.max(), 1, "{name}");
}

/// A suspect (a job whose worker died under it) in the "mail" queue, with jobs of both lanes
/// due: it runs alone in the worker, whichever lane its queue has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_runs_alone_in_the_whole_worker_whatever_its_queue() {
    let _serial = SERIAL.lock().await;
    for db in Db::all().await {
        let name = db.name();
        reset();
        let mut tx = db.pool.begin().await.unwrap();
        for _ in 0..MAILS {
            notify_async(&Mail, &mut Ctx { tx: tx.tx() }).await.unwrap();
        }
        notify_async(&Suspect, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        for _ in 0..PLAINS {
            notify_async(&Plain, &mut Ctx { tx: tx.tx() })
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        db.execute(MAKE_SUSPECT).await;
        AsyncWorker::builder(db.pool.clone())
            .concurrency(1)
            .queue("mail", 3)
            .poll_interval(Duration::from_millis(50))
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_suspect_ran_alone(name);
        db.drop_schema().await;
    }
}

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
struct SyncMail;

#[on(SyncMail, queue = "mail")]
fn send_mail_sync(_: &SyncMail, _: &mut SyncCtx<'_>) {
    let _running = MAIL.enter();
    std::thread::sleep(RUN);
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = SyncCtx<'_>)]
struct SyncPlain;

#[on(SyncPlain, queue)]
fn plain_sync(_: &SyncPlain, _: &mut SyncCtx<'_>) {
    let _running = PLAIN.enter();
    std::thread::sleep(RUN);
}

#[test]
fn the_thread_worker_runs_a_queue_on_threads_of_its_own() {
    let _serial = SERIAL.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let mut conn = Connection::open(&path).unwrap();
    signals_queue::migrate(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    for _ in 0..MAILS {
        notify(&SyncMail, &mut SyncCtx { tx: &tx }).unwrap();
    }
    for _ in 0..PLAINS {
        notify(&SyncPlain, &mut SyncCtx { tx: &tx }).unwrap();
    }
    tx.commit().unwrap();
    reset();
    Worker::builder(&path)
        .concurrency(1)
        .queue("mail", 3)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_lanes("SQLite (rusqlite)");
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = SyncCtx<'_>)]
struct SyncSuspect;

#[on(SyncSuspect, queue = "mail")]
fn suspect_sync(_: &SyncSuspect, _: &mut SyncCtx<'_>) {
    let (alone, _running) = suspect_starts();
    std::thread::sleep(RUN);
    suspect_ends(alone);
}

#[test]
fn the_thread_worker_runs_a_suspect_alone_whatever_its_queue() {
    let _serial = SERIAL.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let mut conn = Connection::open(&path).unwrap();
    signals_queue::migrate(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    for _ in 0..MAILS {
        notify(&SyncMail, &mut SyncCtx { tx: &tx }).unwrap();
    }
    notify(&SyncSuspect, &mut SyncCtx { tx: &tx }).unwrap();
    for _ in 0..PLAINS {
        notify(&SyncPlain, &mut SyncCtx { tx: &tx }).unwrap();
    }
    tx.commit().unwrap();
    conn.execute(MAKE_SUSPECT, []).unwrap();
    reset();
    Worker::builder(&path)
        .concurrency(1)
        .queue("mail", 3)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_suspect_ran_alone("SQLite (rusqlite)");
}
