//! The `signals-queue` binary as an operator runs it, on SQLite and on PostgreSQL (a schema of
//! its own, dropped at the end): jobs written straight into the table in each state, then
//! `stats`, `jobs`, `job`, the actions with and without `--dry-run`, `pause`/`resume`, `prune`,
//! and errors as one line and a non-zero exit.
//!
//! PostgreSQL is at `SIGNALS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Without a server the PostgreSQL half is skipped with a message, except under `CI=true`.

use std::process::Command;

use serde_json::Value;

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn postgres_url() -> String {
    std::env::var("SIGNALS_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.to_owned())
}

/// Runs `sql` (several statements) on the database at `url`.
fn execute(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = signals_queue::Pool::connect(url, 1).await.unwrap();
        signals_queue::with_db!(&pool, |pool| sqlx::raw_sql(sqlx::AssertSqlSafe(
            sql.to_owned()
        ))
        .execute(pool)
        .await
        .map(drop))
        .unwrap();
        pool.close().await;
    });
}

/// `signals-queue --db url args…`: (success, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_signals-queue"))
        .args(["--db", url])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `cli`, which must succeed; its stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(url, args);
    assert!(success, "signals-queue {args:?}: {stderr}");
    stdout
}

fn json(url: &str, args: &[&str]) -> Value {
    serde_json::from_str(&ok(url, args)).unwrap()
}

/// A SQLite file, and a PostgreSQL schema unless the server is unreachable outside CI.
struct Dbs {
    urls: Vec<(String, bool)>,
    _dir: tempfile::TempDir,
    schema: Option<String>,
}

impl Dbs {
    fn new() -> Dbs {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![(
            format!("sqlite://{}", dir.path().join("q.db").display()),
            false,
        )];
        let schema = format!("cli_test_{}", std::process::id());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let created = runtime.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&postgres_url()).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await?;
            conn.close().await
        });
        let schema = match created {
            Ok(()) => {
                urls.push((
                    format!("{}?options=-c%20search_path%3D{schema}", postgres_url()),
                    true,
                ));
                Some(schema)
            }
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!(
                    "PostgreSQL at {} is required under CI: {error}",
                    postgres_url()
                )
            }
            Err(error) => {
                eprintln!("skipping the PostgreSQL half: {error}");
                None
            }
        };
        Dbs {
            urls,
            _dir: dir,
            schema,
        }
    }
}

impl Drop for Dbs {
    fn drop(&mut self) {
        if let Some(schema) = &self.schema {
            execute(&self.urls[1].0, &format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

/// Jobs of `shop.email` on queue `email`: three due, one due in a day, one dead with an
/// attempt in its history.
fn seed(url: &str, postgres: bool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let later = now + 86_400_000;
    let (event, payload, pending) = match postgres {
        true => (
            "'0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b'",
            "body",
            "available",
        ),
        false => ("'e'", "payload", "pending"),
    };
    let scheduled = if postgres { "scheduled" } else { "pending" };
    let columns = format!(
        "(event_id, signal, handler, queue, priority, {payload}, state, max_attempts, run_at, created_at)"
    );
    let sql = format!(
        "INSERT INTO signals_jobs {columns} VALUES
           ({event}, 'shop::Sent', 'shop.email', 'email', 0, '{{\"order\": 1}}', '{pending}', 5, 0, {now}),
           ({event}, 'shop::Sent', 'shop.email', 'email', 0, '{{\"order\": 2}}', '{pending}', 5, 0, {now}),
           ({event}, 'shop::Sent', 'shop.email', 'email', 0, '{{\"order\": 3}}', '{pending}', 5, 0, {now}),
           ({event}, 'shop::Sent', 'shop.email', 'email', 0, '{{\"order\": 4}}', '{scheduled}', 5, {later}, {now});
         INSERT INTO signals_jobs {columns} VALUES
           ({event}, 'shop::Sent', 'shop.email', 'email', 0, '{{\"order\": 5}}', 'dead', 1, 0, {now});
         UPDATE signals_jobs SET attempt = 1, last_error = 'mailbox gone', finished_at = {now},
             attempts = '[{{\"started_at\": {now}, \"duration_ms\": 12, \"worker\": \"host:7\", \"error\": \"mailbox gone\"}}]'
         WHERE state = 'dead'"
    );
    execute(url, &sql);
}

#[test]
fn an_operator_reads_and_acts_on_jobs_from_the_command_line() {
    let dbs = Dbs::new();
    for (url, postgres) in &dbs.urls {
        let url = url.as_str();
        assert_eq!(ok(url, &["migrate"]).trim(), "migrated");
        seed(url, *postgres);

        let stats = json(url, &["stats", "--json"]);
        let email = &stats["queues"]["email"];
        for (state, n) in [
            ("pending", 3),
            ("scheduled", 1),
            ("running", 0),
            ("dead", 1),
        ] {
            assert_eq!(email[state], n, "{url}: {state} in {stats}");
        }
        assert_eq!(email["paused"], false);
        assert!(email["oldest_due_ms"].as_u64().is_some(), "{stats}");
        assert_eq!(stats["handlers"]["shop.email"]["pending"], 3, "{stats}");

        let pending = json(url, &["jobs", "--state", "pending", "--json"]);
        let pending = pending.as_array().unwrap();
        assert_eq!(pending.len(), 3, "{url}");
        for key in [
            "id",
            "handler",
            "queue",
            "state",
            "attempt",
            "max_attempts",
            "due_at",
            "last_error",
        ] {
            assert!(pending[0].get(key).is_some(), "{key} in {}", pending[0]);
        }
        assert!(pending[0]["due_at"].as_str().unwrap().ends_with('Z'));
        let first = pending[0]["id"].to_string();
        let page = json(
            url,
            &[
                "jobs", "--state", "pending", "--after", &first, "--limit", "1", "--json",
            ],
        );
        assert_eq!(page.as_array().unwrap().len(), 1, "{url}");
        assert!(page[0]["id"].as_i64() > pending[0]["id"].as_i64());

        let dead = json(url, &["jobs", "--state", "dead", "--json"]);
        let dead_id = dead[0]["id"].to_string();
        let job = json(url, &["job", &dead_id, "--json"]);
        assert_eq!(job["payload"]["order"], 5, "{job}");
        assert_eq!(job["last_error"], "mailbox gone");
        assert_eq!(job["attempts"][0]["worker"], "host:7", "{job}");
        assert_eq!(job["attempts"][0]["duration_ms"], 12, "{job}");
        assert!(job["attempts"][0]["started_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));

        let discard = ["discard", "--all", "--state", "pending", "--queue", "email"];
        let dry: Vec<&str> = discard.iter().copied().chain(["--dry-run"]).collect();
        assert_eq!(ok(url, &dry).trim(), "3 jobs would change");
        assert_eq!(
            json(url, &["stats", "--json"])["queues"]["email"]["pending"],
            3
        );
        assert_eq!(ok(url, &discard).trim(), "3 jobs changed");
        assert_eq!(ok(url, &["retry", &dead_id]).trim(), "1 job changed");
        let scheduled = json(url, &["jobs", "--state", "scheduled", "--json"]);
        let scheduled_id = scheduled[0]["id"].to_string();
        assert_eq!(ok(url, &["cancel", &scheduled_id]).trim(), "1 job changed");
        assert_eq!(ok(url, &["cancel", &scheduled_id]).trim(), "0 jobs changed");
        let stats = json(url, &["stats", "--json"]);
        let email = &stats["queues"]["email"];
        for (state, n) in [
            ("pending", 1),
            ("scheduled", 0),
            ("dead", 0),
            ("discarded", 3),
            ("cancelled", 1),
        ] {
            assert_eq!(email[state], n, "{url}: {state} in {stats}");
        }

        assert_eq!(ok(url, &["pause", "email"]).trim(), "paused email");
        assert_eq!(
            json(url, &["stats", "--json"])["queues"]["email"]["paused"],
            true
        );
        ok(url, &["resume", "email"]);
        assert_eq!(
            json(url, &["stats", "--json"])["queues"]["email"]["paused"],
            false
        );

        std::thread::sleep(std::time::Duration::from_millis(5));
        let pruned = ok(url, &["prune", "--dead-older-than", "1ms"]);
        assert_eq!(
            pruned.trim(),
            "pruned 0 done and 4 dead, discarded or cancelled jobs"
        );
        assert_eq!(json(url, &["jobs", "--json"]).as_array().unwrap().len(), 1);

        let (success, stdout, stderr) = cli(url, &["job", "999999"]);
        assert!(!success && stdout.is_empty(), "{stdout}");
        assert_eq!(stderr, "signals-queue: no job 999999\n");
    }
}

#[test]
fn errors_are_one_line_and_every_command_has_help() {
    let (success, _, stderr) = cli("mysql://nowhere", &["stats"]);
    assert!(!success);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("signals-queue: "), "{stderr}");
    for command in [
        "migrate", "stats", "jobs", "job", "retry", "discard", "cancel", "pause", "resume", "prune",
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_signals-queue"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{command} --help");
        assert!(!output.stdout.is_empty(), "{command} --help");
    }
}
