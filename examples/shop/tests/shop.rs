//! The `shop` example as a real process, on SQLite and on PostgreSQL: workers killed with
//! SIGKILL at any moment and workers racing on one database end with one email per committed
//! order and nothing left over.
//!
//! PostgreSQL is at `SIGNALS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each test works in a schema of its own and drops it. Without a server the PostgreSQL half is
//! skipped with a message, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `shop` example binary, which `cargo test` builds beside this test (a `--test shop`
/// filter builds no examples: run `cargo build --example shop` first, or test the package).
fn shop() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let debug = deps.parent().unwrap().parent().unwrap();
    debug
        .join("examples")
        .join(format!("shop{}", std::env::consts::EXE_SUFFIX))
}

fn run(db: &str, args: &[&str]) -> String {
    let output = Command::new(shop())
        .args(["--db", db])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "shop {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn spawn_worker(db: &str, args: &[&str]) -> Child {
    Command::new(shop())
        .args(["--db", db])
        .arg("worker")
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// `shop stats` as (orders, emails, email_attempts, pending, running, dead).
fn stats(db: &str) -> [i64; 6] {
    let numbers = all_stats(db);
    numbers[..6].try_into().unwrap()
}

/// Every number of `shop stats`, in order: (orders, emails, email_attempts, pending, running,
/// dead, publish_pending, published).
fn all_stats(db: &str) -> [i64; 8] {
    let json = run(db, &["stats"]);
    numbers(&json)
        .try_into()
        .unwrap_or_else(|_| panic!("unexpected stats: {json}"))
}

/// The numbers in a line of JSON, in order.
fn numbers(json: &str) -> Vec<i64> {
    json.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A database for one test: a SQLite file, or a schema of its own on PostgreSQL (dropped at
/// the end).
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn postgres_url() -> String {
    std::env::var("SIGNALS_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.to_owned())
}

/// Runs one statement on the PostgreSQL server.
fn postgres(sql: String) -> Result<(), sqlx::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&postgres_url()).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        conn.close().await
    })
}

impl Db {
    /// A SQLite database, and a PostgreSQL one unless the server is unreachable outside CI.
    fn all() -> Vec<Db> {
        let dir = tempfile::tempdir().unwrap();
        let mut dbs = vec![Db {
            url: format!("sqlite://{}", dir.path().join("shop.db").display()),
            _dir: Some(dir),
            schema: None,
        }];
        let schema = format!("shop_test_{}", uuid::Uuid::now_v7().simple());
        match postgres(format!("CREATE SCHEMA {schema}")) {
            Ok(()) => dbs.push(Db {
                url: format!("{}?options=-c%20search_path%3D{schema}", postgres_url()),
                _dir: None,
                schema: Some(schema),
            }),
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!(
                    "PostgreSQL at {} is required under CI: {error}",
                    postgres_url()
                )
            }
            Err(error) => eprintln!(
                "skipping the PostgreSQL half: {} is unreachable ({error})",
                postgres_url()
            ),
        }
        dbs
    }

    /// Migrates and places `orders` orders, every 7th declined.
    fn placed(self, orders: &str) -> Db {
        run(&self.url, &["migrate"]);
        let out = run(
            &self.url,
            &["place", "--orders", orders, "--decline-every", "7"],
        );
        assert!(out.starts_with("placed "), "{out}");
        self
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(schema) = &self.schema {
            let _ = postgres(format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

#[test]
fn workers_killed_with_sigkill_and_restarted_send_one_email_per_committed_order() {
    for db in Db::all() {
        killed_and_restarted(&db.placed("240").url);
    }
}

fn killed_and_restarted(db: &str) {
    let committed = 240 - 240 / 7;
    let mut running_at_kills = 0;
    for emails_before_kill in [30, 90] {
        let mut worker = spawn_worker(
            db,
            &[
                "--concurrency",
                "2",
                "--email-delay-ms",
                "2",
                "--lease-ms",
                "400",
                "--retry-base-ms",
                "5",
            ],
        );
        wait_for(|| stats(db)[1] >= emails_before_kill);
        worker.kill().unwrap(); // SIGKILL: no chance to release anything
        worker.wait().unwrap();
        // PostgreSQL finishes a statement the dead process sent (a claim) before it notices
        // the closed connection: count once the server has settled.
        std::thread::sleep(Duration::from_millis(500));
        running_at_kills += stats(db)[4];
    }
    let status = spawn_worker(
        db,
        &[
            "--until-idle",
            "--concurrency",
            "2",
            "--lease-ms",
            "400",
            "--retry-base-ms",
            "5",
        ],
    )
    .wait()
    .unwrap();
    assert!(status.success());
    let [orders, emails, attempts, pending, running, dead] = stats(db);
    assert_eq!((orders, emails), (committed, committed));
    assert_eq!((pending, running, dead), (0, 0, 0));
    assert!(
        attempts - emails <= running_at_kills,
        "{attempts} attempts for {emails} emails; {running_at_kills} jobs were running at the kills"
    );
}

#[test]
fn two_worker_processes_at_once_end_the_same_way() {
    for db in Db::all() {
        two_at_once(&db.placed("200").url);
    }
}

fn two_at_once(db: &str) {
    let committed = 200 - 200 / 7;
    let args = [
        "--until-idle",
        "--concurrency",
        "2",
        "--email-fail-rate",
        "0.2",
        "--retry-base-ms",
        "2",
    ];
    let (mut first, mut second) = (spawn_worker(db, &args), spawn_worker(db, &args));
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    let [orders, emails, attempts, pending, running, dead] = stats(db);
    assert_eq!(orders, committed);
    // A job can die after 5 failures (0.2^5 each): those are retried, as an operator would.
    if dead > 0 {
        run(db, &["retry-dead"]);
        assert!(spawn_worker(db, &args).wait().unwrap().success());
    }
    let [_, emails_after, _, pending_after, running_after, dead_after] = stats(db);
    assert_eq!(emails_after, committed);
    assert_eq!((pending_after, running_after, dead_after), (0, 0, 0));
    assert!(emails <= committed && attempts >= emails && pending + running == 0);
}

#[test]
fn a_bad_database_url_is_one_line_and_a_failure() {
    for (url, expected) in [
        (
            "mysql://localhost/shop",
            "shop: `--db mysql://localhost/shop`: expected a URL such as `sqlite://shop.db` or `postgres://postgres@127.0.0.1/shop` (see `shop --help`)",
        ),
        (
            "sqlite:///nonexistent/dir/shop.db",
            "shop: sqlite:///nonexistent/dir/shop.db: queue database error: error returned from database: (code: 14) unable to open database file",
        ),
        (
            "postgres://postgres@127.0.0.1:1/shop",
            "shop: postgres://postgres@127.0.0.1:1/shop: queue database error: error communicating with database: Connection refused (os error 111)",
        ),
    ] {
        let output = Command::new(shop()).args(["--db", url, "stats"]).output().unwrap();
        assert!(!output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stderr), format!("{expected}\n"));
    }
}

/// The `shipping` example binary, built beside `shop`.
fn shipping() -> PathBuf {
    shop().with_file_name(format!("shipping{}", std::env::consts::EXE_SUFFIX))
}

/// A stream and a subject prefix of one test's own on the NATS server; the stream is deleted
/// on drop. `None` (with a message) when the server is unreachable outside CI.
struct Nats {
    url: String,
    stream: String,
    prefix: String,
}

impl Nats {
    fn connect() -> Option<Nats> {
        let url = std::env::var("SIGNALS_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let id = uuid::Uuid::now_v7().simple().to_string();
        let nats = Nats {
            url,
            stream: format!("SHOP_TEST_{id}"),
            prefix: format!("t{id}."),
        };
        match nats.block_on(async_nats::connect(nats.url.clone())) {
            Ok(_) => Some(nats),
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("NATS at {} is required under CI: {error}", nats.url)
            }
            Err(error) => {
                eprintln!("skipping: NATS at {} is unreachable ({error})", nats.url);
                None
            }
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The options that point `shop worker` and `shipping` at this stream and prefix.
    fn args(&self) -> [&str; 6] {
        [
            "--nats",
            &self.url,
            "--stream",
            &self.stream,
            "--subject-prefix",
            &self.prefix,
        ]
    }

    /// The messages the stream holds.
    fn messages(&self) -> u64 {
        self.block_on(async {
            let client = async_nats::connect(self.url.clone()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream(&self.stream).await.unwrap();
            stream.info().await.unwrap().state.messages
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.block_on(async {
            let client = async_nats::connect(self.url.clone()).await?;
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&self.stream)
                .await;
            Ok::<_, async_nats::ConnectError>(())
        });
    }
}

/// `shipping` with `args` on the database at `db`; its stdout.
fn ship(db: &str, nats: &Nats, args: &[&str]) -> String {
    let output = Command::new(shipping())
        .args(["--db", db])
        .args(nats.args())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "shipping {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn shop_and_shipping_killed_with_sigkill_ship_each_committed_order_exactly_once() {
    for shop_db in Db::all() {
        let Some(nats) = Nats::connect() else {
            return;
        };
        let shop_db = shop_db.placed("150");
        let committed = 150 - 150 / 7;
        let dir = tempfile::tempdir().unwrap();
        let ship_db = format!("sqlite://{}", dir.path().join("shipping.db").display());
        ship(&ship_db, &nats, &["migrate"]);
        // Without `--nats` the messages wait in the outbox, and `--until-idle` does not wait
        // for them.
        assert!(spawn_worker(&shop_db.url, &["--until-idle"])
            .wait()
            .unwrap()
            .success());
        let [.., publish_pending, published] = all_stats(&shop_db.url);
        assert_eq!((publish_pending, published), (committed, 0));
        // Publisher and consumer, killed twice at arbitrary moments, then run to the end.
        let worker_args = [
            &nats.args()[..],
            &["--lease-ms", "500", "--retry-base-ms", "5"],
        ]
        .concat();
        for shipped_before_kill in [20, 60] {
            let mut worker = spawn_worker(&shop_db.url, &worker_args);
            let mut consumer = Command::new(shipping())
                .args(["--db", &ship_db])
                .args(nats.args())
                .arg("run")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            wait_for(|| numbers(&ship(&ship_db, &nats, &["stats"]))[0] >= shipped_before_kill);
            worker.kill().unwrap();
            consumer.kill().unwrap();
            worker.wait().unwrap();
            consumer.wait().unwrap();
        }
        let until_idle = [&worker_args[..], &["--until-idle"]].concat();
        assert!(spawn_worker(&shop_db.url, &until_idle)
            .wait()
            .unwrap()
            .success());
        ship(&ship_db, &nats, &["run", "--until-idle"]);
        let [orders, .., publish_pending, published] = all_stats(&shop_db.url);
        assert_eq!(
            (orders, publish_pending, published),
            (committed, 0, committed)
        );
        let shipping_stats = numbers(&ship(&ship_db, &nats, &["stats"]));
        assert_eq!(
            shipping_stats,
            [committed, committed, 0],
            "one shipment per committed order, each message seen once"
        );
        assert_eq!(
            nats.messages(),
            committed as u64,
            "one message per committed order"
        );
    }
}
