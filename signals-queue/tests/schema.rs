//! The PostgreSQL schema at its edges: the migration is a step of its own that upgrades the
//! previous release's table in place while that release keeps working, a starting worker
//! takes no lock and needs no DDL rights, a newer schema is refused before anything changes,
//! and a signal's JSON is stored byte for byte (a NUL in a string included).
//!
//! PostgreSQL at `SIGNALS_TEST_POSTGRES_URL`; each test in a schema of its own. Skipped with a
//! message when the server is unreachable, except under `CI=true`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{
    with_db, AsyncJobScope, AsyncQueue, AsyncWorker, EnqueueAsync, Error, FromJobAsync, Pool, Tx,
};

mod support;
use support::{wait_for, Db};

/// What the handler saw.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

struct Ctx<'a> {
    tx: Tx<'a>,
    seen: Option<&'a Seen>,
}

impl EnqueueAsync for Ctx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for Ctx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        let seen = job.state::<Arc<Seen>>()?;
        Ok(Ctx {
            tx: job.transaction(),
            seen: Some(seen),
        })
    }
}

#[derive(Signal, Serialize, Deserialize, Debug)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Commented {
    text: String,
}

#[on(Commented, queue, name = "schema.moderate")]
async fn moderate(signal: &Commented, ctx: &mut Ctx<'_>) {
    if let Some(seen) = ctx.seen {
        seen.0.lock().unwrap().push(signal.text.clone());
    }
}

/// Writes `text` as a job in a transaction of its own.
async fn comment(pool: &Pool, text: &str) {
    let mut tx = pool.begin().await.unwrap();
    notify_async(
        &Commented {
            text: text.to_owned(),
        },
        &mut Ctx {
            tx: tx.tx(),
            seen: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Runs a worker until no job is left; what the handler saw.
async fn drain(pool: &Pool) -> Vec<String> {
    let seen = Arc::new(Seen::default());
    AsyncWorker::builder(pool.clone())
        .state(Arc::clone(&seen))
        .poll_interval(Duration::from_millis(20))
        .build()
        .await
        .unwrap()
        .run_until_idle()
        .await
        .unwrap();
    let seen = seen.0.lock().unwrap().clone();
    seen
}

async fn pg(db: &Db) -> sqlx::PgPool {
    match &db.pool {
        Pool::Postgres(pool) => pool.clone(),
        _ => unreachable!("a PostgreSQL test"),
    }
}

/// The schema of the release before migration 4 (schema version 3), as that release created
/// it, and the statements that release runs to write and claim a job.
const PREVIOUS_SCHEMA: &str = "
CREATE TABLE signals_queue_schema (version INTEGER NOT NULL);
CREATE TABLE signals_jobs (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID    NOT NULL,
    signal       TEXT    NOT NULL,
    handler      TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    priority     INTEGER NOT NULL,
    payload      JSONB   NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       BIGINT  NOT NULL,
    lease_until  BIGINT,
    token        BIGINT,
    last_error   TEXT,
    created_at   BIGINT  NOT NULL,
    finished_at  BIGINT,
    worker       BIGINT,
    crashes      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE signals_workers (
    id BIGINT PRIMARY KEY, lease_until BIGINT NOT NULL, lease_ms BIGINT NOT NULL,
    beats BIGINT NOT NULL DEFAULT 0);
CREATE INDEX signals_jobs_pending ON signals_jobs (priority DESC, run_at, id)
    WHERE state = 'pending';
CREATE INDEX signals_jobs_suspect ON signals_jobs (run_at) WHERE state = 'pending' AND crashes > 0;
CREATE INDEX signals_jobs_worker ON signals_jobs (worker) WHERE state = 'running';
CREATE INDEX signals_jobs_done ON signals_jobs (finished_at) WHERE state = 'done';
CREATE TABLE signals_inbox (
    consumer TEXT NOT NULL, message_id TEXT NOT NULL, subject TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('done', 'dead')), error TEXT,
    received_at BIGINT NOT NULL, PRIMARY KEY (consumer, message_id));
CREATE OR REPLACE FUNCTION signals_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('signals_jobs_' || md5(TG_TABLE_SCHEMA), '');
    RETURN NULL;
END $$;
CREATE TRIGGER signals_jobs_notify AFTER INSERT ON signals_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION signals_jobs_notify();
INSERT INTO signals_queue_schema (version) VALUES (1), (2), (3);
";

const PREVIOUS_ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
SELECT gen_random_uuid(), 'schema::Commented', 'schema.moderate', 'default', 0, $1::jsonb, 25,
       t.now, t.now
FROM (SELECT (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT AS now) AS t";

const PREVIOUS_CLAIM: &str = "
WITH next AS MATERIALIZED (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT
      AND handler IN (SELECT jsonb_array_elements_text('[\"schema.moderate\"]'::jsonb))
      AND (crashes > 0) = false
    ORDER BY priority DESC, run_at, id
    LIMIT 10
    FOR UPDATE SKIP LOCKED)
UPDATE signals_jobs AS job
SET state = 'running', attempt = job.attempt + 1, token = 1, worker = NULL, lease_until = NULL
FROM next WHERE job.id = next.id
RETURNING job.payload::text";

/// The previous release's table, with jobs in it and an application transaction holding it
/// open (it wrote a job and now waits on a payment API), is migrated in place: each locking
/// step gives way to that transaction instead of queueing every writer behind it, the indexes
/// build while the previous release keeps writing, and afterwards both releases work on the
/// one table: the previous one claims the jobs it writes, this one runs its own and the
/// previous one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_keeps_working_through_an_online_migration() {
    let Some(db) = Db::postgres_or_skip(true).await else {
        return;
    };
    let pool = pg(&db).await;
    sqlx::raw_sql(PREVIOUS_SCHEMA).execute(&pool).await.unwrap();
    // An earlier try of this migration was cut off after creating its (empty) record.
    sqlx::raw_sql(
        "CREATE TABLE signals_queue_migrations (
             version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let previous_enqueue = |text: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(PREVIOUS_ENQUEUE)
                .bind(format!("{{\"text\": \"{text}\"}}"))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    previous_enqueue("before").await;
    // The application's transaction: it wrote a job and holds the table for 4 seconds.
    let mut open = pool.begin().await.unwrap();
    sqlx::query(PREVIOUS_ENQUEUE)
        .bind(r#"{"text": "held"}"#)
        .execute(&mut *open)
        .await
        .unwrap();
    let migration = tokio::spawn({
        let pool = db.pool.clone();
        async move { AsyncQueue::new(pool).migrate().await }
    });
    // While the migration waits for that transaction, the previous release keeps writing:
    // each write waits at most for one `lock_timeout` of a step that gives way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let started = Instant::now();
        previous_enqueue("during").await;
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "a write waited {:?} behind the migration",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !migration.is_finished(),
        "the migration waited for the open transaction"
    );
    open.commit().await.unwrap();
    migration.await.unwrap().unwrap();
    let (level, applied): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT MAX(version) FROM signals_queue_schema)::BIGINT,
                (SELECT MAX(version) FROM signals_queue_migrations)::BIGINT",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (level, applied),
        (3, 8),
        "the previous release still reads level 3"
    );
    let invalid: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND NOT i.indisvalid",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(invalid, 0);

    // Both releases at once. The previous one writes and claims its own rows...
    previous_enqueue("previous").await;
    comment(&db.pool, "current").await;
    let claimed: Vec<String> = sqlx::query_scalar(PREVIOUS_CLAIM)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        6,
        "the previous release claims its rows: {claimed:?}"
    );
    assert!(
        claimed.iter().all(|json| !json.contains("current")),
        "{claimed:?}"
    );
    // ... which it completes as it always did.
    sqlx::query("UPDATE signals_jobs SET state = 'done' WHERE state = 'running'")
        .execute(&pool)
        .await
        .unwrap();
    // This release runs its own rows, and rows the previous one wrote.
    previous_enqueue("previous, later").await;
    let mut seen = drain(&db.pool).await;
    seen.sort();
    assert_eq!(seen, ["current", "previous, later"]);
    db.drop_schema().await;
}

/// A worker refuses a schema not yet migrated, and a schema a newer release migrated past
/// this one is refused by the migration before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_this_release_cannot_work_with_are_refused_before_anything_changes() {
    let Some(db) = Db::postgres_or_skip(true).await else {
        return;
    };
    let pool = pg(&db).await;
    let seen = Arc::new(Seen::default());
    let error = AsyncWorker::builder(db.pool.clone())
        .state(Arc::clone(&seen))
        .build()
        .await
        .err()
        .expect("a worker on an empty schema");
    assert!(
        matches!(
            error,
            Error::SchemaOutdated {
                found: None,
                needed: 8
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("run the migration first"),
        "{error}"
    );
    let tables: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 0, "build() created nothing");

    sqlx::raw_sql(
        "CREATE TABLE signals_queue_schema (version INTEGER NOT NULL);
         INSERT INTO signals_queue_schema VALUES (99)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let error = AsyncQueue::new(db.pool.clone())
        .migrate()
        .await
        .expect_err("a newer schema");
    assert!(
        matches!(
            error,
            Error::SchemaTooNew {
                found: 99,
                known: 8
            }
        ),
        "{error}"
    );
    let tables: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 1, "nothing was created or changed");
    db.drop_schema().await;
}

/// A worker starting while an application transaction holds the jobs table open takes no lock
/// and waits for nothing, and runs as a role that may only read and write rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_worker_takes_no_lock_and_needs_no_ddl_rights() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let schema = db.schema.clone().unwrap();
    let pool = pg(&db).await;
    let role = format!("{schema}_runtime");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {schema} TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let runtime = Pool::connect(&url, 4).await.unwrap();
    // An application transaction wrote a job and stays open.
    let mut open = runtime.begin().await.unwrap();
    notify_async(
        &Commented {
            text: "held".into(),
        },
        &mut Ctx {
            tx: open.tx(),
            seen: None,
        },
    )
    .await
    .unwrap();
    let seen = Arc::new(Seen::default());
    let worker = tokio::time::timeout(
        Duration::from_secs(5),
        AsyncWorker::builder(runtime.clone())
            .state(Arc::clone(&seen))
            .poll_interval(Duration::from_millis(20))
            .build(),
    )
    .await
    .expect("build() waited for the open transaction")
    .unwrap()
    .start();
    comment(&runtime, "after the start").await;
    wait_for("the committed job", || async {
        seen.0.lock().unwrap().len() == 1
    })
    .await;
    open.commit().await.unwrap();
    wait_for("the held job", || async {
        seen.0.lock().unwrap().len() == 2
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runtime.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    db.drop_schema().await;
}

/// User input with a NUL in a string: `jsonb` cannot hold it, so the business transaction
/// would abort. The job keeps the producer's JSON byte for byte, and the handler gets the
/// string back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_string_is_stored_and_delivered_byte_for_byte() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let text = "before\u{0}after, \u{1F600} and \"quotes\"";
    comment(&db.pool, text).await;
    let stored: String = with_db!(&db.pool, |pool| sqlx::query_scalar(
        "SELECT body FROM signals_jobs"
    )
    .fetch_one(pool)
    .await
    .unwrap());
    let produced = serde_json::to_string(&Commented {
        text: text.to_owned(),
    })
    .unwrap();
    assert_eq!(stored, produced);
    assert_eq!(drain(&db.pool).await, [text]);
    db.drop_schema().await;
}

/// The worker's LISTEN connection is lost (terminated by the server) while a job committed
/// without a notification waits: after reconnecting the worker looks once, and runs the job at
/// once rather than at its next poll (a minute away here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_listen_reconnects_the_worker_looks_at_once() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let schema = db.schema.clone().unwrap();
    let pool = pg(&db).await;
    let seen = Arc::new(Seen::default());
    let worker = AsyncWorker::builder(db.pool.clone())
        .state(Arc::clone(&seen))
        .poll_interval(Duration::from_secs(60))
        .build()
        .await
        .unwrap()
        .start();
    let listener_pid = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&schema)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    wait_for("the worker to listen", || async {
        listener_pid().await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Committed without a notification (as an application with `signals.notify = off`).
    sqlx::raw_sql(
        "BEGIN; SET LOCAL signals.notify = 'off';
         INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                                   max_attempts, run_at, created_at)
         VALUES (gen_random_uuid(), 'schema::Commented', 'schema.moderate', 'default', 0,
                 '{\"text\": \"quiet\"}', 'available', 25, 0, 0);
         COMMIT;",
    )
    .execute(&pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "nothing woke the worker yet"
    );
    let pid = listener_pid().await.unwrap();
    let cut = Instant::now();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    wait_for("the quiet job", || async {
        seen.0.lock().unwrap().len() == 1
    })
    .await;
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "found {:?} after the reconnect",
        cut.elapsed()
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    db.drop_schema().await;
}

/// Debian's PgBouncer, started for one test with its own port and files, as a role whose
/// `search_path` is the test's schema (PgBouncer does not pass `options` through).
struct Bouncer {
    url: String,
    process: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    const BINARY: &str = "/usr/sbin/pgbouncer";

    /// `None` (with a message) when PgBouncer is not installed, outside CI.
    fn start(mode: &str, role: &str) -> Option<Bouncer> {
        if !std::path::Path::new(Bouncer::BINARY).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PgBouncer ({}) is required under CI: .ci/run installs it",
                Bouncer::BINARY
            );
            eprintln!("skipping: {} is not installed", Bouncer::BINARY);
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("users.txt"), format!("\"{role}\" \"\"\n")).unwrap();
        std::fs::write(
            path("pgbouncer.ini"),
            format!(
                "[databases]\ntest = host=127.0.0.1 port=5432 dbname=test\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
                 pool_mode = {mode}\ndefault_pool_size = 20\nmax_client_conn = 100\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\npidfile = {pid}\n",
                users = path("users.txt"),
                log = path("pgbouncer.log"),
                pid = path("pgbouncer.pid"),
            ),
        )
        .unwrap();
        // PgBouncer refuses to run as root: it drops to `nobody`, who must reach its files.
        std::process::Command::new("chmod")
            .args(["-R", "a+rwX", &dir.path().display().to_string()])
            .status()
            .unwrap();
        let mut command = std::process::Command::new(Bouncer::BINARY);
        if unsafe_is_root() {
            command.args(["-u", "nobody"]);
        }
        let process = command.arg(path("pgbouncer.ini")).spawn().unwrap();
        let url = format!("postgres://{role}@127.0.0.1:{port}/test");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "PgBouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Bouncer {
            url,
            process,
            _dir: dir,
        })
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Whether this process runs as root (PgBouncer refuses to).
fn unsafe_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A worker behind PgBouncer: in session mode it works (jobs written and run through the
/// pooler, LISTEN waking the worker though its poll is a minute away); in transaction mode it
/// refuses to start, saying why, instead of failing at random statements later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_session_mode_works_and_transaction_mode_is_refused() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let schema = db.schema.clone().unwrap();
    let pool = pg(&db).await;
    let role = format!("{schema}_pooled");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN SUPERUSER; ALTER ROLE {role} SET search_path = {schema};"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let drop_role = || {
        let pool = pool.clone();
        let role = role.clone();
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let Some(session) = Bouncer::start("session", &role) else {
        drop_role().await;
        return;
    };
    let pooled = Pool::connect(&session.url, 4).await.unwrap();
    let seen = Arc::new(Seen::default());
    let worker = AsyncWorker::builder(pooled.clone())
        .state(Arc::clone(&seen))
        .poll_interval(Duration::from_secs(60))
        .build()
        .await
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written through the pooler by another process's pool: only NOTIFY can wake the worker.
    let writer = Pool::connect(&session.url, 1).await.unwrap();
    comment(&writer, "through the pooler").await;
    let written = Instant::now();
    wait_for("the job", || async { seen.0.lock().unwrap().len() == 1 }).await;
    assert!(
        written.elapsed() < Duration::from_secs(10),
        "woken by NOTIFY"
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    writer.close().await;
    pooled.close().await;
    drop(session);

    let Some(transaction) = Bouncer::start("transaction", &role) else {
        return;
    };
    let pooled = Pool::connect(&transaction.url, 4).await.unwrap();
    let error = AsyncWorker::builder(pooled.clone())
        .state(Arc::clone(&seen))
        .build()
        .await
        .err()
        .expect("a worker behind a transaction-mode pooler");
    assert!(matches!(error, Error::TransactionPooler), "{error}");
    pooled.close().await;
    drop(transaction);
    drop_role().await;
    db.drop_schema().await;
}

/// Two processes migrate the previous release's table at once (two instances of a deploy step,
/// say): the second waits for the first without holding a snapshot, which the first's
/// `CREATE INDEX CONCURRENTLY` would wait for (a deadlock: PostgreSQL cancels one of them).
/// Both succeed, and the table is migrated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_migrations_of_a_live_table_both_succeed() {
    let Some(db) = Db::postgres_or_skip(true).await else {
        return;
    };
    let pool = pg(&db).await;
    sqlx::raw_sql(PREVIOUS_SCHEMA).execute(&pool).await.unwrap();
    for round in 0..3 {
        let migrations: Vec<_> = (0..2)
            .map(|_| {
                let pool = db.pool.clone();
                tokio::spawn(async move { AsyncQueue::new(pool).migrate().await })
            })
            .collect();
        for migration in migrations {
            let result = tokio::time::timeout(Duration::from_secs(60), migration)
                .await
                .expect("a migration hung")
                .unwrap();
            result.unwrap_or_else(|error| panic!("round {round}: {error}"));
        }
        // Migrate the previous release's table again in the next round.
        sqlx::raw_sql(
            "DROP TABLE signals_queue_migrations; DROP TABLE signals_job_counts;
             DROP INDEX signals_jobs_claim, signals_jobs_scheduled, signals_jobs_suspects,
                        signals_jobs_dead, signals_inbox_received",
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    db.drop_schema().await;
}

/// The jobs table lives in the second schema of the search path (the first exists but holds no
/// such table): the worker LISTENs on the channel the table's trigger notifies, named after
/// the table's schema, not the current one, and a committed job wakes it at once (its poll is
/// a minute away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_later_on_the_search_path_still_wakes_the_worker() {
    let Some(db) = Db::postgres_or_skip(false).await else {
        return;
    };
    let schema = db.schema.clone().unwrap();
    let first = format!("{schema}_first");
    db.execute_owned(format!("CREATE SCHEMA {first}")).await;
    let url = db.url.replace(
        &format!("search_path%3D{schema}"),
        &format!("search_path%3D{first},{schema}"),
    );
    let pool = Pool::connect(&url, 4).await.unwrap();
    let seen = Arc::new(Seen::default());
    let worker = AsyncWorker::builder(pool.clone())
        .state(Arc::clone(&seen))
        .poll_interval(Duration::from_secs(60))
        .build()
        .await
        .unwrap()
        .start();
    // The worker idles, listening, after its first (empty) fetch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    comment(&pool, "woken").await;
    let started = Instant::now();
    wait_for("the job", || async { !seen.0.lock().unwrap().is_empty() }).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the job waited {:?}: no notification reached the worker",
        started.elapsed()
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    pool.close().await;
    db.execute_owned(format!("DROP SCHEMA {first} CASCADE"))
        .await;
    db.drop_schema().await;
}

/// A SQLite file as the release before the done counts left it: level 3, no
/// `signals_job_counts`, no inbox time index, no migrations table.
pub const PREVIOUS_SQLITE_SCHEMA: &str = "
CREATE TABLE signals_queue_schema (version INTEGER NOT NULL);
CREATE TABLE signals_jobs (
    id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, signal TEXT NOT NULL,
    handler TEXT NOT NULL, queue TEXT NOT NULL, priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, run_at INTEGER NOT NULL,
    lease_until INTEGER, token INTEGER, last_error TEXT, created_at INTEGER NOT NULL,
    finished_at INTEGER, worker INTEGER, crashes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE signals_workers (
    id INTEGER PRIMARY KEY, lease_until INTEGER NOT NULL, lease_ms INTEGER NOT NULL,
    beats INTEGER NOT NULL DEFAULT 0);
CREATE TABLE signals_inbox (
    consumer TEXT NOT NULL, message_id TEXT NOT NULL, subject TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('done', 'dead')), error TEXT,
    received_at INTEGER NOT NULL, PRIMARY KEY (consumer, message_id));
INSERT INTO signals_queue_schema (version) VALUES (3)";

/// A worker refuses such a file at `build()` (before, it started and every job that wrote
/// died on the missing counts table while the completer retried forever); after the migration
/// it runs the file's jobs, and the level the previous release reads is still 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_of_the_previous_release_is_refused_until_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("previous.db").display());
    let pool = Pool::connect(&url, 2).await.unwrap();
    with_db!(&pool, |pool| {
        sqlx::raw_sql(PREVIOUS_SQLITE_SCHEMA)
            .execute(pool)
            .await
            .unwrap();
    });
    let refused = |error: Error| {
        assert!(
            matches!(
                error,
                Error::SchemaOutdated {
                    found: Some(3),
                    needed: 8
                }
            ),
            "{error}"
        )
    };
    let seen = Arc::new(Seen::default());
    let built = AsyncWorker::builder(pool.clone())
        .state(Arc::clone(&seen))
        .build()
        .await;
    refused(
        built
            .err()
            .expect("the async worker started on an unmigrated file"),
    );
    comment(&pool, "after the migration").await;
    AsyncQueue::new(pool.clone()).migrate().await.unwrap();
    assert_eq!(drain(&pool).await, ["after the migration"]);
    let level: i64 = with_db!(&pool, |pool| sqlx::query_scalar(
        "SELECT MAX(version) FROM signals_queue_schema"
    )
    .fetch_one(pool)
    .await
    .unwrap());
    assert_eq!(level, 3, "the previous release reads level 3");
    pool.close().await;
}

/// Done jobs the previous release left (completed before the done counts existed, or by that
/// release during a rolling deploy) were never counted: a purge takes them off the table but
/// not off the counts, which stay equal to the done rows this release completed and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_done_jobs_the_previous_release_left_keeps_the_counts_exact() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("previous.db").display());
    let mut databases = vec![(Pool::connect(&sqlite, 2).await.unwrap(), None)];
    if let Some(db) = Db::postgres_or_skip(true).await {
        databases.insert(0, (db.pool.clone(), Some(db)));
    }
    for (pool, db) in databases {
        let name = if pool.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        let (schema, done_row) = match pool.is_postgres() {
            true => (
                PREVIOUS_SCHEMA,
                "INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload,
                     state, max_attempts, run_at, created_at, finished_at)
                 SELECT gen_random_uuid(), 'schema::Commented', 'schema.moderate', 'default', 0,
                     '{}', 'done', 25, 0, 0, 1 FROM generate_series(1, 3)",
            ),
            false => (
                PREVIOUS_SQLITE_SCHEMA,
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)
                 INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload,
                     state, max_attempts, run_at, created_at, finished_at)
                 SELECT 'e', 'schema::Commented', 'schema.moderate', 'default', 0, '{}', 'done',
                     25, 0, 0, 1 FROM n",
            ),
        };
        with_db!(&pool, |pool| {
            sqlx::raw_sql(schema).execute(pool).await.unwrap();
            sqlx::raw_sql(done_row).execute(pool).await.unwrap();
        });
        let queue = AsyncQueue::new(pool.clone());
        queue.migrate().await.unwrap();
        comment(&pool, "first").await;
        assert_eq!(drain(&pool).await, ["first"], "{name}");
        // Every done row so far: the previous release's three and this release's one.
        assert_eq!(queue.purge_done(Duration::ZERO).await.unwrap(), 4, "{name}");
        comment(&pool, "second").await;
        comment(&pool, "third").await;
        assert_eq!(drain(&pool).await.len(), 2, "{name}");
        let done = queue
            .stats()
            .await
            .unwrap()
            .total(signals_queue::JobState::Done);
        assert_eq!(done, 2, "{name}: the counts drifted");
        if let Some(db) = db {
            db.drop_schema().await;
        }
    }
}
