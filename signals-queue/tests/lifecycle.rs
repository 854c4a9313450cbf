//! The async worker's job life cycle, on PostgreSQL and on SQLite through sqlx: claim order,
//! lazy transactions, batched completions, timeouts, a pool smaller than the concurrency, a
//! lease taken away from a running job, wake-ups, and a start that takes no lock.
//!
//! PostgreSQL is at `SIGNALS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a schema of its own and drops
//! it. Without a server the PostgreSQL half is skipped with a message, except under `CI=true`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use tokio::sync::Semaphore;

mod support;

use support::{wait_for, Ctx, Db};

use signals_queue::{with_db, AsyncWorker, AsyncWorkerBuilder, Pool, RetryPolicy};

/// Writes one effect row through the job's transaction (opening it).
async fn effect(ctx: &mut Ctx<'_>, n: i64) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO effects (n) VALUES ($1)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(n)
        .execute(conn)
        .await
        .map(drop))
}

fn worker(pool: &Pool) -> AsyncWorkerBuilder {
    AsyncWorker::builder(pool.clone())
        .poll_interval(Duration::from_millis(20))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        })
}

/// Notifies every signal of `signals` in one transaction, and commits.
async fn commit<S>(db: &Db, signals: &[S])
where
    S: for<'c> Signal<Context<'c> = Ctx<'c>>,
{
    let mut tx = db.pool.begin().await.unwrap();
    for signal in signals {
        notify_async(signal, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Claim order is run order.

static RAN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Routine;

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Urgent;

#[on(Routine, queue)]
async fn routine(_: &Routine, _: &mut Ctx<'_>) {
    RAN.lock().unwrap().push("routine");
}

#[on(Urgent, queue, priority = 10)]
async fn urgent(_: &Urgent, _: &mut Ctx<'_>) {
    RAN.lock().unwrap().push("urgent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_job_written_last_runs_first() {
    for db in Db::all().await {
        RAN.lock().unwrap().clear();
        let mut tx = db.pool.begin().await.unwrap();
        for _ in 0..7 {
            notify_async(&Routine, &mut Ctx { tx: tx.tx() })
                .await
                .unwrap();
        }
        notify_async(&Urgent, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        worker(&db.pool)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let ran = RAN.lock().unwrap().clone();
        assert_eq!(ran.len(), 8, "{}", db.name());
        assert_eq!(ran[0], "urgent", "{}: {ran:?}", db.name());
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// No connection while a job waits.

static WAITING: AtomicUsize = AtomicUsize::new(0);
static NETWORK: Semaphore = Semaphore::const_new(0);

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct CallsOut {
    n: i64,
}

/// A provider call (the semaphore), then a write.
#[on(CallsOut, queue)]
async fn calls_out(sig: &CallsOut, ctx: &mut Ctx<'_>) -> Result<(), BoxError> {
    WAITING.fetch_add(1, Ordering::SeqCst);
    NETWORK.acquire().await?.forget();
    effect(ctx, sig.n).await?;
    Ok(())
}

/// Connections of `pool` in use now.
fn in_use(pool: &Pool) -> u32 {
    match pool {
        Pool::Postgres(pool) => pool.size() - pool.num_idle() as u32,
        Pool::Sqlite(pool) => pool.size() - pool.num_idle() as u32,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_on_the_network_hold_no_connection_so_16_run_on_a_pool_of_2() {
    for db in Db::all().await {
        let name = db.name();
        let signals: Vec<CallsOut> = (0..16).map(|n| CallsOut { n }).collect();
        commit(&db, &signals).await;
        WAITING.store(0, Ordering::SeqCst);
        let pool = Pool::connect(&db.url, 2).await.unwrap();
        let running = worker(&pool).concurrency(16).build().await.unwrap().start();
        wait_for("16 handlers waiting at once", || async {
            WAITING.load(Ordering::SeqCst) == 16
        })
        .await;
        assert_eq!(
            in_use(&pool),
            0,
            "{name}: a waiting handler holds no connection"
        );
        NETWORK.add_permits(16);
        running.wait_idle().await.unwrap();
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(db.count("SELECT COUNT(DISTINCT n) FROM effects").await, 16);
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Batched completions.

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Ping;

#[on(Ping, queue)]
async fn pong(_: &Ping, _: &mut Ctx<'_>) {}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Record {
    n: i64,
}

#[on(Record, queue)]
async fn record(sig: &Record, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    effect(ctx, sig.n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_never_open_their_transaction_complete_many_to_a_statement() {
    for db in Db::all().await {
        let name = db.name();
        commit(&db, &vec![Ping; 300]).await;
        let records: Vec<Record> = (0..40).map(|n| Record { n }).collect();
        commit(&db, &records).await;
        let running = worker(&db.pool)
            .concurrency(50)
            .build()
            .await
            .unwrap()
            .start();
        running.wait_idle().await.unwrap();
        // After shutdown: `wait_idle` reads the database, which may be ahead of the counters
        // of executors whose commit has just returned.
        let stats = running.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(stats.completed_in_batches, 300, "{name}: {stats:?}");
        assert_eq!(stats.completed_with_writes, 40, "{name}: {stats:?}");
        assert!(stats.flushes <= 300 / 5, "{name}: {stats:?}");
        assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 40, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                .await,
            340,
            "{name}"
        );
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Hangs;

static HANG_ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

/// The first attempt writes, then hangs; the second writes and returns.
#[on(Hangs, queue, timeout = "300ms")]
async fn hangs(_: &Hangs, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    let attempt = HANG_ATTEMPTS.fetch_add(1, Ordering::SeqCst) + 1;
    effect(ctx, attempt as i64).await?;
    if attempt == 1 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_is_cancelled_rolled_back_and_retried() {
    for db in Db::all().await {
        let name = db.name();
        HANG_ATTEMPTS.store(0, Ordering::SeqCst);
        commit(&db, &[Hangs]).await;
        let start = Instant::now();
        worker(&db.pool)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(20), "{name}");
        assert_eq!(HANG_ATTEMPTS.load(Ordering::SeqCst), 2, "{name}");
        // The hung attempt's write rolled back with its transaction.
        assert_eq!(db.count("SELECT MIN(n) FROM effects").await, 2, "{name}");
        assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 1, "{name}");
        let error: String = with_db!(&db.pool, |pool| sqlx::query_scalar(
            "SELECT last_error FROM signals_jobs WHERE state = 'done'"
        )
        .fetch_one(pool)
        .await
        .unwrap());
        assert_eq!(error, "the handler timed out after 300ms", "{name}");
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A pool smaller than the concurrency: the worker's own connections keep the lease.

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Holds {
    n: i64,
}

/// Writes, then keeps its transaction (and connection) open for a second.
#[on(Holds, queue)]
async fn holds(sig: &Holds, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    effect(ctx, sig.n).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_holding_the_whole_pool_do_not_starve_the_lease() {
    for db in Db::all().await {
        let name = db.name();
        let signals: Vec<Holds> = (0..4).map(|n| Holds { n }).collect();
        commit(&db, &signals).await;
        // One connection for four handlers that each hold it a second; a lease of 300 ms.
        let pool = Pool::connect(&db.url, 1).await.unwrap();
        worker(&pool)
            .concurrency(4)
            .lease(Duration::from_millis(300))
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 4, "{name}");
        assert_eq!(
            db.count("SELECT CAST(SUM(attempt) AS BIGINT) FROM signals_jobs")
                .await,
            4,
            "{name}: no job ran twice"
        );
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A lease taken away: the old worker's completion and failure are refused.

static FENCE: Semaphore = Semaphore::const_new(0);
static FENCED_STARTS: AtomicUsize = AtomicUsize::new(0);

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Fenced {
    /// Whether the attempt writes (completion in its transaction) or not (the completer).
    writes: bool,
    /// Whether the first attempt fails after the gate.
    fail: bool,
}

/// The first attempt waits at the gate, then writes (or not) and succeeds (or fails); later
/// attempts write and succeed at once.
#[on(Fenced, queue)]
async fn fenced(sig: &Fenced, ctx: &mut Ctx<'_>) -> Result<(), BoxError> {
    let attempt = FENCED_STARTS.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt == 1 {
        FENCE.acquire().await?.forget();
        if sig.writes {
            effect(ctx, 1).await?;
        }
        if sig.fail {
            return Err("the first attempt failed, after its lease was taken away".into());
        }
        return Ok(());
    }
    effect(ctx, attempt as i64).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_taken_away_can_neither_complete_nor_fail_the_job() {
    for db in Db::all().await {
        for (writes, fail) in [(true, false), (false, false), (true, true)] {
            let name = format!("{} (writes: {writes}, fails: {fail})", db.name());
            db.execute("DELETE FROM signals_jobs").await;
            db.execute("DELETE FROM effects").await;
            FENCED_STARTS.store(0, Ordering::SeqCst);
            commit(&db, &[Fenced { writes, fail }]).await;
            // Worker A: a long lease, so it does not renew during the test.
            let a = worker(&db.pool)
                .lease(Duration::from_secs(60))
                .build()
                .await
                .unwrap()
                .start();
            wait_for("A's attempt to start", || async {
                FENCED_STARTS.load(Ordering::SeqCst) == 1
            })
            .await;
            // A's lease is gone (as if it lapsed while A was paused or partitioned): a rescue
            // takes the job back, and worker B runs it.
            db.execute("DELETE FROM signals_workers").await;
            let b = worker(&db.pool).build().await.unwrap().start();
            wait_for("B to complete the job", || async {
                db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
                    .await
                    == 1
            })
            .await;
            b.shutdown(Duration::from_secs(10)).await.unwrap();
            // A's handler finishes now: its completion (or failure) is refused.
            FENCE.add_permits(1);
            a.shutdown(Duration::from_secs(10)).await.unwrap();
            assert_eq!(
                db.count("SELECT COUNT(*) FROM effects").await,
                1,
                "{name}: A's writes rolled back"
            );
            assert_eq!(db.count("SELECT MIN(n) FROM effects").await, 2, "{name}");
            assert_eq!(
                db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done' AND attempt = 2")
                    .await,
                1,
                "{name}: B's completion stands"
            );
        }
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Wake-ups: one fetch per committed job, not one per idle slot.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_one_fetch_not_every_idle_slot() {
    for db in Db::all().await {
        if !db.pool.is_postgres() {
            db.drop_schema().await;
            continue; // LISTEN/NOTIFY
        }
        let running = worker(&db.pool)
            .concurrency(64)
            .poll_interval(Duration::from_secs(30))
            .build()
            .await
            .unwrap()
            .start();
        wait_for("the first fetch", || async { running.stats().fetches >= 1 }).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = running.stats().fetches;
        for n in 0..20 {
            commit(&db, &[Record { n }]).await;
            wait_for("the job to be done", || async {
                db.count("SELECT COUNT(*) FROM effects").await == n + 1
            })
            .await;
        }
        let fetches = running.stats().fetches - before;
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        assert!(
            (20..=30).contains(&fetches),
            "{fetches} fetches for 20 commits into 64 idle slots"
        );
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Starting a worker while an application transaction is open.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_starts_while_an_application_transaction_that_enqueued_is_open() {
    for db in Db::all().await {
        let name = db.name();
        if !db.pool.is_postgres() {
            // SQLite has one writer: an open write transaction holds every writer, and a
            // worker's start writes its lease. Nothing to check there.
            db.drop_schema().await;
            continue;
        }
        let mut open = db.pool.begin().await.unwrap();
        notify_async(&Record { n: 1 }, &mut Ctx { tx: open.tx() })
            .await
            .unwrap();
        // The transaction stays open (waiting on a payment API, say) while a worker starts.
        let built = tokio::time::timeout(Duration::from_secs(5), worker(&db.pool).build()).await;
        let running = built
            .expect("the start waited for the open transaction")
            .unwrap();
        let running = running.start();
        open.commit().await.unwrap();
        running.wait_idle().await.unwrap();
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(db.count("SELECT COUNT(*) FROM effects").await, 1, "{name}");
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// One `notify_async`, one statement for all of its queued handlers' rows.

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Fanned {
    n: i64,
}

#[on(Fanned, queue = "one")]
async fn fan_one(_: &Fanned, _: &mut Ctx<'_>) {}

#[on(Fanned, queue = "two", priority = 5)]
async fn fan_two(_: &Fanned, _: &mut Ctx<'_>) {}

/// Filtered when the rows are written: only even orders.
#[on(Fanned, queue = "three", when = |f| f.n % 2 == 0)]
async fn fan_three(_: &Fanned, _: &mut Ctx<'_>) {}

#[derive(Serialize)]
struct FannedMessage {
    n: i64,
}

#[on(Fanned, publish = "fanned.out")]
fn fan_message(sig: &Fanned) -> FannedMessage {
    FannedMessage { n: sig.n }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notify_writes_all_of_its_jobs_in_one_statement() {
    for db in Db::all().await {
        let name = db.name();
        if db.pool.is_postgres() {
            // Counts the inserting statements on the jobs table.
            db.execute_owned(
                "CREATE TABLE statements (n INTEGER NOT NULL);
                 CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO statements VALUES (1); RETURN NULL; END $$;
                 CREATE TRIGGER count_statement AFTER INSERT ON signals_jobs
                     FOR EACH STATEMENT EXECUTE FUNCTION count_statement();"
                    .to_owned(),
            )
            .await;
        }
        commit(&db, &[Fanned { n: 2 }]).await;
        commit(&db, &[Fanned { n: 3 }]).await;
        // Order 2: four rows (the filter accepts); order 3: three.
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs").await,
            7,
            "{name}"
        );
        assert_eq!(
            db.count("SELECT COUNT(DISTINCT event_id) FROM signals_jobs")
                .await,
            2,
            "{name}: one event id per notify"
        );
        let queues: Vec<String> = with_db!(&db.pool, |pool| sqlx::query_scalar(
            "SELECT queue FROM signals_jobs ORDER BY id"
        )
        .fetch_all(pool)
        .await
        .unwrap());
        // In run order (the handlers' order in the signal's table), for each notify.
        let run_order: Vec<&str> = signals_core::handlers::<Fanned>()
            .filter_map(|handler| handler.queue().or(handler.publish()))
            .collect();
        assert_eq!(run_order[0], "two", "priority 5 runs first");
        let odd = run_order.iter().copied().filter(|queue| *queue != "three");
        let expected: Vec<&str> = run_order.iter().copied().chain(odd).collect();
        assert_eq!(queues, expected, "{name}: in run order");
        // The producer's text, byte for byte (PostgreSQL keeps it in `body`).
        let column = if db.pool.is_postgres() {
            "body"
        } else {
            "payload"
        };
        let sql = format!(
            "SELECT {column} FROM signals_jobs WHERE queue = 'fanned.out' ORDER BY id LIMIT 1"
        );
        let message: String = with_db!(&db.pool, |pool| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(message, r#"{"n":2}"#, "{name}");
        if db.pool.is_postgres() {
            assert_eq!(
                db.count("SELECT COUNT(*) FROM statements").await,
                2,
                "{name}: one INSERT per notify"
            );
        }
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A schema name of 60 bytes: the NOTIFY channel stays under PostgreSQL's 63.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_schema_name_neither_breaks_enqueue_nor_wake_ups() {
    for db in Db::all().await {
        let Some(schema) = db.schema.clone() else {
            db.drop_schema().await;
            continue;
        };
        let long = format!("{schema}_{}", "x".repeat(60 - schema.len() - 1));
        assert_eq!(long.len(), 60);
        db.execute_owned(format!("CREATE SCHEMA {long}")).await;
        let url = db.url.replace(&schema, &long);
        let pool = Pool::connect(&url, 2).await.unwrap();
        signals_queue::AsyncQueue::new(pool.clone())
            .migrate()
            .await
            .unwrap();
        with_db!(&pool, |pool| sqlx::raw_sql(
            "CREATE TABLE effects (n BIGINT NOT NULL)"
        )
        .execute(pool)
        .await
        .map(drop))
        .unwrap();
        // Woken by NOTIFY only: the poll is far away.
        let running = worker(&pool)
            .poll_interval(Duration::from_secs(60))
            .build()
            .await
            .unwrap()
            .start();
        wait_for("the first fetch", || async { running.stats().fetches >= 2 }).await;
        let mut tx = pool.begin().await.unwrap();
        notify_async(&Record { n: 7 }, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let count = || async {
            with_db!(&pool, |pool| sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM effects"
            )
            .fetch_one(pool)
            .await
            .unwrap())
        };
        let start = Instant::now();
        wait_for("the job, woken by NOTIFY", || async { count().await == 1 }).await;
        assert!(start.elapsed() < Duration::from_secs(10));
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        db.execute_owned(format!("DROP SCHEMA {long} CASCADE"))
            .await;
        db.drop_schema().await;
    }
}

/// A claim whose reply never arrived (the connection dropped after the server committed it)
/// left jobs `running` under a live worker that does not know them: they would wait forever.
/// The claimer records the lost claim's token, and its maintenance gives the jobs back under
/// that token, their attempts uncharged, whenever the server committed the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_was_lost_is_undone_by_its_token() {
    use signals_queue::__broker as queue;
    for db in Db::all().await {
        let name = db.name();
        commit(&db, &[Routine, Routine]).await;
        let handlers = r#"[{"name": "lifecycle::routine", "signal": "Routine"}]"#;
        let worker = queue::worker_id();
        let token = queue::token();
        let request = queue::ClaimRequest {
            handlers,
            limit: 10,
            suspects: false,
            worker,
            now: None,
            token,
        };
        let mut conn = queue::acquire(&db.pool).await.unwrap();
        // A live worker's lease, as `build()` registers it.
        let lease = Duration::from_secs(30);
        queue::heartbeat(conn.tx(), worker, lease, None)
            .await
            .unwrap();
        let claimed = queue::claim(conn.tx(), &request).await.unwrap();
        drop(conn);
        assert_eq!(claimed.len(), 2, "{name}");
        // As if the claim's reply had been lost with its connection.
        let in_flight = queue::InFlight::default();
        in_flight.lost(token);
        let (retire, retired, woken) = (
            std::sync::atomic::AtomicBool::new(false),
            tokio::sync::Notify::new(),
            tokio::sync::Notify::new(),
        );
        let (renewed, clock, retry) = (
            queue::LeaseClock::default(),
            signals_queue::Clock::system(),
            RetryPolicy::default(),
        );
        let upkeep = queue::Upkeep {
            pool: &db.pool,
            worker,
            lease,
            tick: Duration::from_millis(20),
            retry: &retry,
            handlers,
            clock: &clock,
            woken: &woken,
            suspects: None,
            running: None,
            in_flight: Some(&in_flight),
            max_age: None,
            renewed: &renewed,
            retire: &retire,
            retired: &retired,
            claimable: None,
            cancel: None,
            outbox: None,
        };
        let back = wait_for("the jobs back", || async {
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state <> 'running' AND attempt = 0")
                .await
                == 2
        });
        tokio::select! {
            () = queue::maintain(upkeep) => panic!("{name}: maintenance ended"),
            () = back => {}
        }
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A failure the database refuses to record.

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct FailsOnce;

static FAILS_ONCE: AtomicUsize = AtomicUsize::new(0);

#[on(FailsOnce, queue)]
async fn fails_once(_: &FailsOnce, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    match FAILS_ONCE.fetch_add(1, Ordering::SeqCst) {
        0 => Err("the provider is down".into()),
        _ => Ok(()),
    }
}

/// A trigger that refuses every write of a failed attempt (running → anything but done) until
/// `refuse_until.until_ms`, by the database's clock.
const REFUSE_FAILURES: [&str; 2] = [
    "
CREATE TABLE refuse_until (until_ms BIGINT NOT NULL);
CREATE FUNCTION refuse_failures() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT until_ms FROM refuse_until) > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
    THEN RAISE EXCEPTION 'refused by the test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_failures BEFORE UPDATE ON signals_jobs FOR EACH ROW
    WHEN (OLD.state = 'running' AND NEW.state NOT IN ('running', 'done'))
    EXECUTE FUNCTION refuse_failures();
INSERT INTO refuse_until VALUES ((EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + 2000)",
    "
CREATE TABLE refuse_until (until_ms INTEGER NOT NULL);
CREATE TRIGGER refuse_failures BEFORE UPDATE ON signals_jobs
    WHEN OLD.state = 'running' AND NEW.state NOT IN ('running', 'done')
     AND (SELECT until_ms FROM refuse_until)
         > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
INSERT INTO refuse_until VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + 2000)",
];

/// The database refuses to record a failed attempt for two seconds, longer than the worker's
/// lease (600 ms): the executor tries until the lease would lapse, then leaves the job to
/// maintenance, which finds a running row of its own worker that nothing holds and fails it the
/// normal way once the database accepts it. The job is retried and done; nothing stays
/// `running` under a live worker, so the worker gets idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_the_database_refuses_to_record_is_recorded_later_not_left_running() {
    for db in Db::all().await {
        let name = db.name();
        FAILS_ONCE.store(0, Ordering::SeqCst);
        commit(&db, &[FailsOnce]).await;
        let trigger = match db.pool.is_postgres() {
            true => REFUSE_FAILURES[0],
            false => REFUSE_FAILURES[1],
        };
        with_db!(&db.pool, |pool| {
            sqlx::raw_sql(trigger).execute(pool).await.unwrap();
        });
        let started = Instant::now();
        let worker = worker(&db.pool)
            .lease(Duration::from_millis(600))
            .build()
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), worker.run_until_idle())
            .await
            .unwrap_or_else(|_| panic!("{name}: the job stayed running"))
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2), "{name}");
        assert_eq!(FAILS_ONCE.load(Ordering::SeqCst), 2, "{name}");
        let (state, error): (String, String) = with_db!(&db.pool, |pool| sqlx::query_as(
            "SELECT state, last_error FROM signals_jobs"
        )
        .fetch_one(pool)
        .await
        .unwrap());
        assert_eq!(state, "done", "{name}");
        assert!(error.contains("could not record"), "{name}: {error}");
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The heartbeat waits for no other maintenance.

/// Promotion of due scheduled jobs takes three seconds (a trigger sleeps 300 ms per row: a
/// large due backlog on a slow disk), three times the worker's lease: the lease is renewed
/// meanwhile, so no other worker would rescue the jobs it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_promotion_does_not_hold_up_the_heartbeat() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let records: Vec<Record> = (0..10).map(|n| Record { n }).collect();
    commit(&db, &records).await;
    db.execute_owned(
        "UPDATE signals_jobs SET state = 'scheduled';
         CREATE FUNCTION slow_promotion() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
         CREATE TRIGGER slow_promotion BEFORE UPDATE ON signals_jobs FOR EACH ROW
             WHEN (OLD.state = 'scheduled' AND NEW.state = 'available')
             EXECUTE FUNCTION slow_promotion()"
            .to_owned(),
    )
    .await;
    let running = worker(&db.pool)
        .lease(Duration::from_millis(900))
        .build()
        .await
        .unwrap()
        .start();
    let lapsed = "SELECT COUNT(*) FROM signals_workers
                  WHERE lease_until < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
    let started = Instant::now();
    while db.count("SELECT COUNT(*) FROM effects").await < 10 {
        assert_eq!(
            db.count(lapsed).await,
            0,
            "the lease lapsed after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(30), "jobs not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown(Duration::from_secs(10)).await.unwrap();
    db.drop_schema().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown with the database gone.

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Gated;

static GATE: Semaphore = Semaphore::const_new(0);
static AT_GATE: AtomicUsize = AtomicUsize::new(0);

/// Waits at the gate; writes nothing (the completer completes it).
#[on(Gated, queue)]
async fn gated(_: &Gated, _: &mut Ctx<'_>) {
    AT_GATE.fetch_add(1, Ordering::SeqCst);
    GATE.acquire().await.unwrap().forget();
}

/// The database is cut off (a TCP proxy closes every connection and refuses new ones) while 20
/// handlers finish: their completions cannot be written. Shutdown still returns, within the
/// grace and a lease (the completer gives up; the jobs stay `running` under a lease nobody
/// renews, for another worker to rescue), instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_when_the_database_is_gone() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    commit(&db, &vec![Gated; 20]).await;
    let proxy = support::CutProxy::start().await;
    let pool = Pool::connect(&proxy.url(&db.url), 4).await.unwrap();
    let running = worker(&pool)
        .concurrency(20)
        .lease(Duration::from_secs(1))
        .build()
        .await
        .unwrap()
        .start();
    wait_for("20 handlers at the gate", || async {
        AT_GATE.load(Ordering::SeqCst) == 20
    })
    .await;
    proxy.cut();
    GATE.add_permits(20);
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        running.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown hung with the database gone")
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
            .await,
        0,
        "nothing could be completed"
    );
    db.drop_schema().await;
}

// ---------------------------------------------------------------------------------------------
// One worker drains for a suspect, not every one.

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Blocking;

static BLOCKING_GATE: Semaphore = Semaphore::const_new(0);
static AT_BLOCKING_GATE: AtomicUsize = AtomicUsize::new(0);

#[on(Blocking, queue)]
async fn blocking(_: &Blocking, _: &mut Ctx<'_>) {
    AT_BLOCKING_GATE.fetch_add(1, Ordering::SeqCst);
    BLOCKING_GATE.acquire().await.unwrap().forget();
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Rescued;

#[on(Rescued, queue)]
async fn rescued(_: &Rescued, _: &mut Ctx<'_>) {}

/// Two busy workers (each runs a long job) and a suspect becomes due: before, both stopped
/// fetching to run it alone, so a new job waited for the long ones. Now a busy worker leaves a
/// suspect to an idle one for a lease, so both keep fetching meanwhile (and once it has
/// waited a lease, one of them, not both, reserves and drains for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_suspect_does_not_stop_every_busy_worker() {
    for db in Db::all().await {
        let name = db.name();
        AT_BLOCKING_GATE.store(0, Ordering::SeqCst);
        commit(&db, &[Blocking, Blocking]).await;
        // A busy worker reserves a suspect only after it waited a lease: long enough here that
        // the new job runs first, however loaded the machine.
        let lease = Duration::from_secs(10);
        let a = worker(&db.pool).lease(lease).build().await.unwrap().start();
        wait_for("A's long job", || async {
            AT_BLOCKING_GATE.load(Ordering::SeqCst) == 1
        })
        .await;
        let b = worker(&db.pool)
            .lease(lease)
            .concurrency(2)
            .build()
            .await
            .unwrap()
            .start();
        wait_for("B's long job", || async {
            AT_BLOCKING_GATE.load(Ordering::SeqCst) == 2
        })
        .await;
        commit(&db, &[Rescued]).await;
        // As a rescue leaves it: due from now on (SQLite writes fresh jobs with `run_at = 0`,
        // which would make it due for a lease already).
        db.execute(
            "UPDATE signals_jobs SET crashes = 1, run_at = created_at WHERE handler LIKE '%rescued'",
        )
        .await;
        // Both workers' maintenance (every 20 ms) sees the suspect due.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        commit(&db, &[Record { n: 1 }]).await;
        while db.count("SELECT COUNT(*) FROM effects").await != 1 {
            if started.elapsed() > lease / 2 {
                let rows: Vec<(i64, String, String, Option<i64>, i32)> =
                    with_db!(&db.pool, |pool| sqlx::query_as(
                        "SELECT id, handler, state, worker, crashes FROM signals_jobs ORDER BY id"
                    )
                    .fetch_all(pool)
                    .await
                    .unwrap());
                panic!("{name}: {rows:?} a={:?} b={:?}", a.stats(), b.stats());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            started.elapsed() < lease / 2,
            "{name}: the new job waited {:?}",
            started.elapsed()
        );
        BLOCKING_GATE.add_permits(2);
        b.wait_idle().await.unwrap();
        a.shutdown(Duration::from_secs(10)).await.unwrap();
        b.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state <> 'done'")
                .await,
            0,
            "{name}"
        );
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Short jobs are fetched ahead of the free slots; a shutdown gives the unstarted ones back.

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Quick;

static QUICK_RAN: AtomicUsize = AtomicUsize::new(0);

#[on(Quick, queue)]
async fn quick(_: &Quick, _: &mut Ctx<'_>) {
    QUICK_RAN.fetch_add(1, Ordering::SeqCst);
}

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Stuck;

static STUCK_GATE: Semaphore = Semaphore::const_new(0);
static AT_STUCK_GATE: AtomicUsize = AtomicUsize::new(0);

#[on(Stuck, queue, priority = 1)]
async fn stuck(_: &Stuck, _: &mut Ctx<'_>) {
    AT_STUCK_GATE.fetch_add(1, Ordering::SeqCst);
    STUCK_GATE.acquire().await.unwrap().forget();
}

/// A worker of one slot that has seen short jobs claims ten more than its slot: they wait,
/// claimed, while a job holds the slot. A shutdown gives them back uncharged before it waits
/// for the running one, and none of them ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_jobs_are_fetched_ahead_and_a_shutdown_gives_back_those_not_started() {
    for db in Db::all().await {
        let name = db.name();
        QUICK_RAN.store(0, Ordering::SeqCst);
        AT_STUCK_GATE.store(0, Ordering::SeqCst);
        let running = worker(&db.pool)
            .concurrency(1)
            .fetch_ahead(10)
            .build()
            .await
            .unwrap()
            .start();
        // Short jobs, one claim after another: the worker learns they are shorter than a claim.
        for _ in 0..5 {
            commit(&db, &vec![Quick; 4]).await;
            running.wait_idle().await.unwrap();
        }
        assert_eq!(QUICK_RAN.load(Ordering::SeqCst), 20, "{name}");
        // The stuck job first (its priority), then twenty quick ones, in one transaction.
        let mut tx = db.pool.begin().await.unwrap();
        notify_async(&Stuck, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        for _ in 0..20 {
            notify_async(&Quick, &mut Ctx { tx: tx.tx() })
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        wait_for("the stuck job", || async {
            AT_STUCK_GATE.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_for("ten quick jobs claimed ahead", || async {
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'")
                .await
                == 11
        })
        .await;
        assert_eq!(QUICK_RAN.load(Ordering::SeqCst), 20, "{name}: none ran");
        let shutdown = tokio::spawn(running.shutdown(Duration::from_secs(30)));
        wait_for("the ten given back", || async {
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'")
                .await
                == 1
        })
        .await;
        STUCK_GATE.add_permits(1);
        shutdown.await.unwrap().unwrap();
        assert_eq!(QUICK_RAN.load(Ordering::SeqCst), 20, "{name}: none ran");
        assert_eq!(
            db.count(
                "SELECT COUNT(*) FROM signals_jobs
                 WHERE handler LIKE '%quick' AND state IN ('available', 'pending')
                   AND attempt = 0 AND token IS NULL AND worker IS NULL"
            )
            .await,
            20,
            "{name}: the ten given back uncharged, the other ten never claimed"
        );
        assert_eq!(
            db.count(
                "SELECT COUNT(*) FROM signals_jobs WHERE handler LIKE '%stuck' AND state = 'done'"
            )
            .await,
            1,
            "{name}"
        );
        // Another worker runs them.
        worker(&db.pool)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(QUICK_RAN.load(Ordering::SeqCst), 40, "{name}");
        db.drop_schema().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A job fetched ahead and cancelled while it waits never starts.

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Brief {
    n: i64,
}

static BRIEF_RAN: Mutex<Vec<i64>> = Mutex::new(Vec::new());

#[on(Brief, queue)]
async fn brief(sig: &Brief, _: &mut Ctx<'_>) {
    BRIEF_RAN.lock().unwrap().push(sig.n);
}

#[derive(Signal, Serialize, Deserialize, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Blocker;

static BLOCKER_GATE: Semaphore = Semaphore::const_new(0);
static AT_BLOCKER_GATE: AtomicUsize = AtomicUsize::new(0);

#[on(Blocker, queue, priority = 1)]
async fn blocker(_: &Blocker, _: &mut Ctx<'_>) {
    AT_BLOCKER_GATE.fetch_add(1, Ordering::SeqCst);
    BLOCKER_GATE.acquire().await.unwrap().forget();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetched_ahead_and_cancelled_while_it_waits_never_starts() {
    for db in Db::all().await {
        let name = db.name();
        BRIEF_RAN.lock().unwrap().clear();
        AT_BLOCKER_GATE.store(0, Ordering::SeqCst);
        let running = worker(&db.pool)
            .concurrency(1)
            .fetch_ahead(5)
            .build()
            .await
            .unwrap()
            .start();
        // Short jobs first: the worker learns they are shorter than a claim.
        for _ in 0..5 {
            commit(&db, &vec![Brief { n: -1 }; 4]).await;
            running.wait_idle().await.unwrap();
        }
        let mut tx = db.pool.begin().await.unwrap();
        notify_async(&Blocker, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        for n in 1..=5 {
            notify_async(&Brief { n }, &mut Ctx { tx: tx.tx() })
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        wait_for("five jobs waiting behind the blocker", || async {
            AT_BLOCKER_GATE.load(Ordering::SeqCst) == 1
                && db
                    .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'")
                    .await
                    == 6
        })
        .await;
        // Cancel the third brief job while it waits, claimed, in the worker.
        let queue = signals_queue::AsyncQueue::new(db.pool.clone());
        let waiting = queue
            .jobs(
                &signals_queue::JobFilter::new().state(signals_queue::JobStatus::Running),
                0,
                10,
            )
            .await
            .unwrap();
        let third = waiting
            .iter()
            .filter(|job| job.handler.ends_with("::brief"))
            .nth(2)
            .unwrap()
            .id;
        assert_eq!(
            queue
                .act_on(signals_queue::Action::Cancel, &[third], false)
                .await
                .unwrap(),
            1,
            "{name}"
        );
        // The worker learns of it within a second (a notification, or SQLite's poll).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        BLOCKER_GATE.add_permits(1);
        running.wait_idle().await.unwrap();
        running.shutdown(Duration::from_secs(10)).await.unwrap();
        let ran: Vec<i64> = BRIEF_RAN
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|n| *n > 0)
            .collect();
        assert_eq!(ran, [1, 2, 4, 5], "{name}: the cancelled one never started");
        let job = queue.job(third).await.unwrap().unwrap();
        assert_eq!(
            job.summary.state,
            signals_queue::JobStatus::Cancelled,
            "{name}"
        );
        db.drop_schema().await;
    }
}
