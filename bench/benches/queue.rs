//! The queue rung on SQLite (rusqlite), each figure next to a plain-SQL floor measured in the
//! same run: rounds interleave every variant (in alternating order), each variant gets a fresh
//! database file (WAL, `synchronous = NORMAL`), and the tables give the median over rounds.
//!
//! 1. enqueue: a transaction that inserts a domain row and a job row, by hand or with `notify`;
//! 2. drain: 20,000 noop jobs, by hand-written claim loops and by `signals_queue::Worker`;
//! 3. latency: commit returned → handler started, with a worker running, at ~500 commits/s;
//! 4. one writer: the application's transaction latency with no worker, and with a worker (in
//!    this process, or in a child process running this program) whose handlers wait 20 ms on a
//!    fake network call before writing.
//!
//! ```text
//! cargo bench -p signals-bench --bench queue                  # every section, 3 rounds
//! cargo bench -p signals-bench --bench queue -- drain         # one section
//! ROUNDS=1 JOBS=5000 SECONDS=2 cargo bench -p signals-bench --bench queue
//! ```
//!
//! The program runs only when cargo passes `--bench` (`cargo bench`), so `cargo test` never
//! starts it. Results go to stdout as Markdown tables (`bench/QUEUE.md` quotes them).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use signals_core::{notify, on, BoxError, Signal};
use signals_queue::{Enqueue, FromJob, JobScope, Worker};

mod common;
use common::{load, lock, median, now_ms, origin, percentile, range, since_origin, Order};

// ---------------------------------------------------------------------------------------------
// The application: a context, three signals, one queued handler each.

/// What every handler receives: the transaction (the caller's, or the worker's for one job).
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

/// Enqueue and drain: one queued noop handler.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct OrderPlaced(Order);

/// Noop handlers run so far (the drain waits for it).
static NOOPS: AtomicUsize = AtomicUsize::new(0);

#[on(OrderPlaced, queue, name = "bench.noop")]
fn noop(sig: &OrderPlaced, _: &mut Ctx<'_>) {
    black_box(sig);
    NOOPS.fetch_add(1, Ordering::Relaxed);
}

/// Latency: the handler records when it started, keyed by `seq`.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Ping {
    seq: usize,
    /// When `notify` ran (just before COMMIT), in ns since [`origin`].
    notified_ns: i64,
}

/// `seq` → handler start, in ns since [`origin`].
static STARTS: Mutex<Vec<(usize, i64)>> = Mutex::new(Vec::new());

#[on(Ping, queue, name = "bench.latency")]
fn record_start(sig: &Ping, _: &mut Ctx<'_>) {
    let started = since_origin(Instant::now());
    lock(&STARTS).push((sig.seq, started));
}

/// One writer: the handler waits on a fake network call, then writes one row.
#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct OrderToShip(Order);

/// The fake network call of [`call_then_write`].
const NETWORK_CALL: Duration = Duration::from_millis(20);

#[on(OrderToShip, queue, name = "bench.slow")]
fn call_then_write(sig: &OrderToShip, ctx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    std::thread::sleep(NETWORK_CALL);
    ctx.tx.execute(
        "INSERT INTO receipts (order_id) VALUES (?1)",
        [sig.0.order_id],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The database.

const APP_SCHEMA: &str = "
CREATE TABLE orders (
    id           INTEGER PRIMARY KEY,
    customer     TEXT    NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency     TEXT    NOT NULL
);
CREATE TABLE receipts (order_id INTEGER NOT NULL);
";

const INSERT_ORDER: &str =
    "INSERT INTO orders (id, customer, amount_cents, currency) VALUES (?1, ?2, ?3, ?4)";

/// `signals_queue`'s `sqlite::ENQUEUE`, copied: the floor writes the same row by hand.
const ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";

/// `signals_queue`'s `sqlite::CLAIM`, copied, for the hand-written drains.
const CLAIM: &str = "
UPDATE signals_jobs
SET state = 'running', attempt = attempt + 1, lease_until = ?1, token = ?2
WHERE id IN (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ?3
      AND handler IN (SELECT value FROM json_each(?4))
    ORDER BY priority DESC, run_at, id
    LIMIT ?5)
RETURNING id, payload";

/// [`CLAIM`] with `LIMIT +?5`: SQLite re-prepares `CLAIM` each time `?5` is bound (it counts in
/// `sqlite3_stmt_status(SQLITE_STMTSTATUS_REPREPARE)`); this one stays prepared.
const CLAIM_PREPARED_ONCE: &str = "
UPDATE signals_jobs
SET state = 'running', attempt = attempt + 1, lease_until = ?1, token = ?2
WHERE id IN (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ?3
      AND handler IN (SELECT value FROM json_each(?4))
    ORDER BY priority DESC, run_at, id
    LIMIT +?5)
RETURNING id, payload";

/// `signals_queue`'s `sqlite::COMPLETE`, copied.
const COMPLETE: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = ?1, lease_until = NULL
WHERE id = ?2 AND token = ?3 AND state = 'running'";

/// The handler names the worker claims for (every queued handler of this program), as JSON.
const HANDLERS: &str = r#"["bench.latency","bench.noop","bench.slow"]"#;

/// A database file in a temp dir of its own, removed on drop.
struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    /// A fresh file with the jobs table and the application's tables.
    fn fresh() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bench.db");
        let conn = open(&path);
        signals_queue::migrate(&conn).expect("migrate");
        conn.execute_batch(APP_SCHEMA).expect("app schema");
        Db { _dir: dir, path }
    }

    fn count(&self, sql: &str) -> i64 {
        open(&self.path)
            .query_row(sql, [], |row| row.get(0))
            .expect("count")
    }
}

/// A connection as the queue opens its own: WAL, `synchronous = NORMAL`, 10 s busy timeout.
fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn
}

fn immediate(conn: &mut Connection) -> Transaction<'_> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin immediate")
}

fn insert_order(tx: &Connection, order: &Order) {
    tx.prepare_cached(INSERT_ORDER)
        .expect("prepare")
        .execute(params![
            order.order_id,
            order.customer,
            order.amount_cents,
            order.currency
        ])
        .expect("insert order");
}

// ---------------------------------------------------------------------------------------------
// 1. Enqueue: one transaction per order.

/// Floor: the domain row and the job row, both by hand (a UUIDv7 and the JSON payload too).
fn place_by_hand(conn: &mut Connection, order: Order) {
    let tx = immediate(conn);
    insert_order(&tx, &order);
    let signal = OrderPlaced(order);
    tx.prepare_cached(ENQUEUE)
        .expect("prepare")
        .execute(params![
            uuid::Uuid::now_v7().to_string(),
            "queue::OrderPlaced",
            "bench.noop",
            "default",
            0,
            serde_json::to_string(&signal).expect("json"),
            25,
            now_ms(),
        ])
        .expect("insert job");
    tx.commit().expect("commit");
}

/// Ours: the domain row, then `notify` writes the job row.
fn place_with_notify(conn: &mut Connection, order: Order) {
    let tx = immediate(conn);
    insert_order(&tx, &order);
    notify(&OrderPlaced(order), &mut Ctx { tx: &tx }).expect("notify");
    tx.commit().expect("commit");
}

/// Reference: the domain row alone, no job.
fn place_domain_only(conn: &mut Connection, order: Order) {
    let tx = immediate(conn);
    insert_order(&tx, &order);
    tx.commit().expect("commit");
}

/// One way of placing an order in its own transaction.
type Place = fn(&mut Connection, Order);

/// Transactions per second of `place` over `jobs` orders, in a fresh database.
fn enqueue_rate(jobs: usize, place: Place) -> f64 {
    let db = Db::fresh();
    let mut conn = open(&db.path);
    let start = Instant::now();
    for id in 1..=jobs as i64 {
        place(&mut conn, Order::new(id));
    }
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    assert_eq!(db.count("SELECT COUNT(*) FROM orders"), jobs as i64);
    rate
}

// ---------------------------------------------------------------------------------------------
// 2. Drain: 20,000 noop jobs written beforehand.

/// How a hand-written drain commits.
#[derive(Clone, Copy)]
enum Completion {
    /// One transaction per job: the job's completion commits alone.
    EachJob,
    /// One transaction per claimed batch, one completion statement per job.
    PerBatch,
    /// One transaction per batch, each job in a savepoint (handler writes + completion).
    SavepointPerJob,
}

/// A database holding `jobs` pending noop jobs, written with `notify`, WAL checkpointed.
fn backlog(jobs: usize) -> Db {
    let db = Db::fresh();
    let mut conn = open(&db.path);
    let tx = immediate(&mut conn);
    for id in 1..=jobs as i64 {
        notify(&OrderPlaced(Order::new(id)), &mut Ctx { tx: &tx }).expect("notify");
    }
    tx.commit().expect("commit");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    db
}

/// A claimed job: id and payload.
type Claimed = (i64, String);

fn claim(conn: &Connection, sql: &str, limit: usize, token: i64) -> Vec<Claimed> {
    let now = now_ms();
    let mut statement = conn.prepare_cached(sql).expect("prepare claim");
    let rows = statement
        .query_map(
            params![now + 30_000, token, now, HANDLERS, limit as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("claim");
    let mut claimed: Vec<Claimed> = rows.collect::<Result<_, _>>().expect("claimed rows");
    claimed.sort_by_key(|job| job.0);
    claimed
}

fn complete(conn: &Connection, job: &Claimed, token: i64) {
    black_box(&job.1); // the noop handler
    let changed = conn
        .prepare_cached(COMPLETE)
        .expect("prepare complete")
        .execute(params![now_ms(), job.0, token])
        .expect("complete");
    assert_eq!(changed, 1);
}

/// Floor: claim `limit` jobs at a time with `claim_sql` and complete them as `completion` says,
/// until none.
fn drain_by_hand(path: &Path, claim_sql: &str, limit: usize, completion: Completion) {
    let mut conn = open(path);
    loop {
        let token = fastrand::i64(1..i64::MAX);
        let jobs = claim(&conn, claim_sql, limit, token);
        if jobs.is_empty() {
            return;
        }
        match completion {
            Completion::EachJob => {
                for job in &jobs {
                    let tx = conn
                        .transaction_with_behavior(TransactionBehavior::Deferred)
                        .expect("begin");
                    complete(&tx, job, token);
                    tx.commit().expect("commit");
                }
            }
            Completion::PerBatch => {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .expect("begin");
                for job in &jobs {
                    complete(&tx, job, token);
                }
                tx.commit().expect("commit");
            }
            Completion::SavepointPerJob => {
                let mut tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .expect("begin");
                for job in &jobs {
                    let savepoint = tx.savepoint().expect("savepoint");
                    complete(&savepoint, job, token);
                    savepoint.commit().expect("release");
                }
                tx.commit().expect("commit");
            }
        }
    }
}

/// Ours: a `Worker`, timed from `start` until every job's handler ran (checked every
/// millisecond); its shutdown is not timed.
fn drain_with_worker(path: &Path, jobs: usize, concurrency: usize) -> Duration {
    NOOPS.store(0, Ordering::SeqCst);
    let builder = Worker::builder(path).concurrency(concurrency);
    let worker = builder.build().expect("worker");
    let start = Instant::now();
    let running = worker.start().expect("start");
    while NOOPS.load(Ordering::Relaxed) < jobs {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    running.shutdown(Duration::from_secs(10)).expect("shutdown");
    elapsed
}

/// Who drains the backlog.
#[derive(Clone, Copy)]
enum Drainer {
    /// A hand-written loop claiming `limit` jobs at a time with [`CLAIM`].
    ByHand(usize, Completion),
    /// The same, with [`CLAIM_PREPARED_ONCE`].
    ByHandPreparedOnce(usize, Completion),
    /// `signals_queue::Worker` with `concurrency` threads (its fetches claim for free slots).
    Worker(usize),
}

/// Every drain variant, in table order; the third is the floor the others are quoted against.
const DRAINS: [(&str, Drainer); 9] = [
    (
        "floor: claim 1, complete each",
        Drainer::ByHand(1, Completion::EachJob),
    ),
    (
        "floor: claim 8, complete each",
        Drainer::ByHand(8, Completion::EachJob),
    ),
    (
        "floor: claim 16, complete each",
        Drainer::ByHand(16, Completion::EachJob),
    ),
    (
        "floor: claim 8, complete each, `LIMIT +?5` (claim prepared once)",
        Drainer::ByHandPreparedOnce(8, Completion::EachJob),
    ),
    (
        "floor: claim 16, complete per batch",
        Drainer::ByHand(16, Completion::PerBatch),
    ),
    (
        "floor: claim 16, savepoint per job, commit per batch",
        Drainer::ByHand(16, Completion::SavepointPerJob),
    ),
    ("Worker, concurrency 1", Drainer::Worker(1)),
    ("Worker, concurrency 4", Drainer::Worker(4)),
    ("Worker, concurrency 16", Drainer::Worker(16)),
];

/// Jobs per second of one drain over a fresh backlog of `jobs`; checks every job is done.
fn drain_rate(drainer: Drainer, jobs: usize) -> f64 {
    let db = backlog(jobs);
    let elapsed = match drainer {
        Drainer::ByHand(limit, completion) => {
            let start = Instant::now();
            drain_by_hand(&db.path, CLAIM, limit, completion);
            start.elapsed()
        }
        Drainer::ByHandPreparedOnce(limit, completion) => {
            let start = Instant::now();
            drain_by_hand(&db.path, CLAIM_PREPARED_ONCE, limit, completion);
            start.elapsed()
        }
        Drainer::Worker(threads) => drain_with_worker(&db.path, jobs, threads),
    };
    let rate = jobs as f64 / elapsed.as_secs_f64();
    let done = db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'");
    assert_eq!(done, jobs as i64, "every job done");
    rate
}

// ---------------------------------------------------------------------------------------------
// 3. Latency: commit returned → handler started.

/// Waits until `next`, then returns it advanced by `every`.
fn pace(next: Instant, every: Duration) -> Instant {
    let now = Instant::now();
    if next > now {
        std::thread::sleep(next - now);
    }
    next + every
}

/// Latencies in ms of one round: [commit returned → handler started, notify → handler started].
fn latency_round(seconds: f64, rate: f64) -> [Vec<f64>; 2] {
    let db = Db::fresh();
    lock(&STARTS).clear();
    let worker = Worker::builder(&db.path)
        .build()
        .expect("worker")
        .start()
        .expect("start");
    let mut conn = open(&db.path);
    let count = (seconds * rate) as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut committed = Vec::with_capacity(count);
    let mut notified = Vec::with_capacity(count);
    let mut next = Instant::now();
    for seq in 0..count {
        next = pace(next, every);
        let tx = immediate(&mut conn);
        insert_order(&tx, &Order::new(seq as i64 + 1));
        let notified_ns = since_origin(Instant::now());
        notify(&Ping { seq, notified_ns }, &mut Ctx { tx: &tx }).expect("notify");
        tx.commit().expect("commit");
        committed.push(since_origin(Instant::now()));
        notified.push(notified_ns);
    }
    wait_for(|| lock(&STARTS).len() >= count, Duration::from_secs(30));
    worker.shutdown(Duration::from_secs(10)).expect("shutdown");
    let starts: HashMap<usize, i64> = lock(&STARTS).iter().copied().collect();
    let ms = |from: &[i64]| -> Vec<f64> {
        (0..count)
            .map(|seq| (starts[&seq] - from[seq]) as f64 / 1e6)
            .collect()
    };
    [ms(&committed), ms(&notified)]
}

fn wait_for(condition: impl Fn() -> bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. One writer: the application's transactions while a worker's handlers write.

/// Where the worker of the one-writer section runs.
#[derive(Clone, Copy)]
enum WorkerAt {
    /// No worker.
    Nowhere,
    /// In this process, with this many threads: every `notify` here wakes it.
    ThisProcess(usize),
    /// In a child process (this program again), with this many threads: it finds jobs by
    /// polling, and this process's `notify` never wakes it.
    ChildProcess(usize),
}

/// Set in a child process: run a worker with this many threads on [`CHILD_DB`] until stdin
/// closes.
const CHILD_WORKER: &str = "SIGNALS_QUEUE_BENCH_WORKER";
/// The database of a child process's worker.
const CHILD_DB: &str = "SIGNALS_QUEUE_BENCH_DB";

/// A started worker of the one-writer section.
enum Started {
    Nowhere,
    ThisProcess(signals_queue::RunningWorker),
    ChildProcess(std::process::Child),
}

fn start_worker(at: WorkerAt, path: &Path) -> Started {
    match at {
        WorkerAt::Nowhere => Started::Nowhere,
        WorkerAt::ThisProcess(threads) => Started::ThisProcess(
            Worker::builder(path)
                .concurrency(threads)
                .build()
                .expect("worker")
                .start()
                .expect("start"),
        ),
        WorkerAt::ChildProcess(threads) => {
            let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
                .env(CHILD_WORKER, threads.to_string())
                .env(CHILD_DB, path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn the worker process");
            let mut ready = String::new();
            let stdout = child.stdout.as_mut().expect("piped");
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready)
                .expect("worker process ready");
            assert_eq!(ready.trim(), "ready");
            Started::ChildProcess(child)
        }
    }
}

fn stop_worker(started: Started) {
    match started {
        Started::Nowhere => {}
        Started::ThisProcess(running) => {
            running.shutdown(Duration::from_secs(10)).expect("shutdown");
        }
        Started::ChildProcess(mut child) => {
            drop(child.stdin.take()); // the child shuts its worker down at EOF
            assert!(child.wait().expect("worker process").success());
        }
    }
}

/// The child process of [`WorkerAt::ChildProcess`]: a worker until stdin closes.
fn child_worker(threads: &str) {
    let path = std::env::var_os(CHILD_DB).expect("the database path");
    let running = Worker::builder(path)
        .concurrency(threads.parse().expect("thread count"))
        .build()
        .expect("worker")
        .start()
        .expect("start");
    println!("ready");
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).expect("stdin");
    running.shutdown(Duration::from_secs(10)).expect("shutdown");
}

/// A busy handler that retries every 50 µs for up to 10 s, in place of SQLite's default one
/// (`busy_timeout`), which sleeps 1 ms, then 2, 5, 10 ms ... between retries.
fn retry_every_50us(retries: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    retries < 200_000
}

/// One round of placing orders at `rate` for `seconds`, with a worker where `at` says: the
/// application's transaction latencies in ms (BEGIN IMMEDIATE → COMMIT returned), and how many
/// handlers wrote their row meanwhile. With `short_retries`, the application's connection waits
/// for the write lock with [`retry_every_50us`].
fn one_writer_round(seconds: f64, rate: f64, at: WorkerAt, short_retries: bool) -> (Vec<f64>, i64) {
    let db = Db::fresh();
    let worker = start_worker(at, &db.path);
    let mut conn = open(&db.path);
    if short_retries {
        conn.busy_handler(Some(retry_every_50us))
            .expect("busy handler");
    }
    let count = (seconds * rate) as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut latencies = Vec::with_capacity(count);
    let mut next = Instant::now();
    for id in 1..=count as i64 {
        next = pace(next, every);
        let start = Instant::now();
        let tx = immediate(&mut conn);
        let order = Order::new(id);
        insert_order(&tx, &order);
        notify(&OrderToShip(order), &mut Ctx { tx: &tx }).expect("notify");
        tx.commit().expect("commit");
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let written = db.count("SELECT COUNT(*) FROM receipts");
    stop_worker(worker);
    (latencies, written)
}

// ---------------------------------------------------------------------------------------------
// Statistics and tables.

/// Runs `variants` once per round, in alternating order; each result per variant, in order.
fn interleaved<T>(rounds: usize, variants: usize, mut run: impl FnMut(usize) -> T) -> Vec<Vec<T>> {
    let mut results: Vec<Vec<T>> = (0..variants).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let order: Vec<usize> = match round % 2 {
            0 => (0..variants).collect(),
            _ => (0..variants).rev().collect(),
        };
        for variant in order {
            results[variant].push(run(variant));
        }
        eprintln!("  round {} of {rounds} done (load {})", round + 1, load());
    }
    results
}

struct Settings {
    rounds: usize,
    jobs: usize,
    seconds: f64,
    sections: Vec<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        Settings {
            rounds: var("ROUNDS", 3.0) as usize,
            jobs: var("JOBS", 20_000.0) as usize,
            seconds: var("SECONDS", 5.0),
            sections: std::env::args()
                .skip(1)
                .filter(|arg| !arg.starts_with("--"))
                .collect(),
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

fn enqueue_section(settings: &Settings) {
    println!(
        "\n## 1. Enqueue: one transaction per order ({} orders)\n",
        settings.jobs
    );
    let variants: [(&str, Place); 3] = [
        ("floor: domain row + job row by hand", place_by_hand),
        (
            "ours: domain row + `notify` (one queued handler)",
            place_with_notify,
        ),
        ("reference: domain row alone", place_domain_only),
    ];
    let rates = interleaved(settings.rounds, variants.len(), |v| {
        enqueue_rate(settings.jobs, variants[v].1)
    });
    let floor = median(&rates[0]);
    println!("| variant | k tx/s (median) | rounds min–max | cost vs floor |");
    println!("| --- | ---: | ---: | ---: |");
    for ((name, _), rates) in variants.iter().zip(&rates) {
        let (min, max) = range(rates);
        let rate = median(rates);
        println!(
            "| {name} | {:.1} | {:.1}–{:.1} | {:.2}× |",
            rate / 1e3,
            min / 1e3,
            max / 1e3,
            floor / rate
        );
    }
}

fn drain_section(settings: &Settings) {
    println!("\n## 2. Drain: {} noop jobs\n", settings.jobs);
    let rates = interleaved(settings.rounds, DRAINS.len(), |v| {
        drain_rate(DRAINS[v].1, settings.jobs)
    });
    let floor = median(&rates[2]);
    println!("| variant | k jobs/s (median) | rounds min–max | vs claim 16, complete each |");
    println!("| --- | ---: | ---: | ---: |");
    for ((name, _), rates) in DRAINS.iter().zip(&rates) {
        let (min, max) = range(rates);
        let rate = median(rates);
        println!(
            "| {name} | {:.1} | {:.1}–{:.1} | {:.2}× |",
            rate / 1e3,
            min / 1e3,
            max / 1e3,
            rate / floor
        );
    }
}

fn latency_section(settings: &Settings) {
    let rate = 500.0;
    println!(
        "\n## 3. Latency: commit → handler start, worker running, {rate} commits/s for {} s\n",
        settings.seconds
    );
    let rounds = interleaved(settings.rounds, 1, |_| {
        latency_round(settings.seconds, rate)
    });
    println!(
        "| measured from | p50 ms (median) | p99 ms (median) | max ms | p50 rounds | p99 rounds |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (row, name) in ["COMMIT returned", "`notify` (before COMMIT)"]
        .into_iter()
        .enumerate()
    {
        let p50s: Vec<f64> = rounds[0].iter().map(|r| percentile(&r[row], 0.5)).collect();
        let p99s: Vec<f64> = rounds[0]
            .iter()
            .map(|r| percentile(&r[row], 0.99))
            .collect();
        let max = rounds[0]
            .iter()
            .map(|r| range(&r[row]).1)
            .fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {name} | {:.2} | {:.2} | {max:.2} | {} | {} |",
            median(&p50s),
            median(&p99s),
            list(&p50s),
            list(&p99s)
        );
    }
}

/// The one-writer variants, in table order: where the worker runs, and whether the
/// application's connection retries the write lock every 50 µs ([`retry_every_50us`]).
const ONE_WRITER: [(&str, WorkerAt, bool); 7] = [
    ("no worker", WorkerAt::Nowhere, false),
    (
        "worker in this process, concurrency 1",
        WorkerAt::ThisProcess(1),
        false,
    ),
    (
        "worker in this process, concurrency 4",
        WorkerAt::ThisProcess(4),
        false,
    ),
    (
        "worker in a child process, concurrency 1",
        WorkerAt::ChildProcess(1),
        false,
    ),
    (
        "worker in a child process, concurrency 4",
        WorkerAt::ChildProcess(4),
        false,
    ),
    (
        "worker in this process, concurrency 1; app retries the lock every 50 µs",
        WorkerAt::ThisProcess(1),
        true,
    ),
    (
        "worker in this process, concurrency 4; app retries the lock every 50 µs",
        WorkerAt::ThisProcess(4),
        true,
    ),
];

fn one_writer_section(settings: &Settings) {
    let rate = 500.0;
    println!(
        "\n## 4. One writer: the application's transactions at {rate}/s for {} s\n",
        settings.seconds
    );
    println!(
        "Each transaction: BEGIN IMMEDIATE, the domain row, `notify` (one queued handler), COMMIT.\n\
         The worker's handler waits {} ms (a fake network call), then writes one row.\n",
        NETWORK_CALL.as_millis()
    );
    let rounds = interleaved(settings.rounds, ONE_WRITER.len(), |v| {
        let (_, at, short_retries) = ONE_WRITER[v];
        one_writer_round(settings.seconds, rate, at, short_retries)
    });
    let p = |v: usize, q: f64| -> f64 {
        median(
            &rounds[v]
                .iter()
                .map(|r| percentile(&r.0, q))
                .collect::<Vec<_>>(),
        )
    };
    let (floor50, floor99) = (p(0, 0.5), p(0, 0.99));
    println!("| variant | p50 ms | p99 ms | max ms | p50 vs no worker | p99 vs no worker | over 1 ms | handler rows written |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (v, (name, _, _)) in ONE_WRITER.iter().enumerate() {
        let max = rounds[v]
            .iter()
            .map(|r| range(&r.0).1)
            .fold(f64::NEG_INFINITY, f64::max);
        let written: Vec<String> = rounds[v].iter().map(|r| r.1.to_string()).collect();
        let slow: Vec<f64> = rounds[v].iter().map(|r| share_over(&r.0, 1.0)).collect();
        println!(
            "| {name} | {:.3} | {:.3} | {max:.2} | {:.2}× | {:.2}× | {:.2} % | {} |",
            p(v, 0.5),
            p(v, 0.99),
            p(v, 0.5) / floor50,
            p(v, 0.99) / floor99,
            median(&slow),
            written.join(" / ")
        );
    }
}

/// The percentage of `values` above `limit`.
fn share_over(values: &[f64], limit: f64) -> f64 {
    let over = values.iter().filter(|&&v| v > limit).count();
    100.0 * over as f64 / values.len() as f64
}

fn list(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    parts.join(" / ")
}

/// One section of the benchmark: runs its rounds and prints its table.
type Section = fn(&Settings);

fn main() {
    if let Ok(threads) = std::env::var(CHILD_WORKER) {
        return child_worker(&threads);
    }
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("queue benchmark: run it with `cargo bench -p signals-bench --bench queue`");
        return;
    }
    origin();
    let settings = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# Queue benchmark (SQLite, rusqlite)\n");
    println!(
        "{cores} cores; {} rounds, interleaved; load average at start: {}",
        settings.rounds,
        load()
    );
    let sections: [(&str, Section); 4] = [
        ("enqueue", enqueue_section),
        ("drain", drain_section),
        ("latency", latency_section),
        ("one-writer", one_writer_section),
    ];
    for (name, section) in sections {
        if settings.runs(name) {
            eprintln!("--- {name} (load {})", load());
            section(&settings);
        }
    }
    println!("\nload average at end: {}", load());
}
