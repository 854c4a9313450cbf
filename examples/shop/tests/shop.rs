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
    let numbers = numbers(&json);
    assert_eq!(numbers.len(), 10, "unexpected stats: {json}");
    numbers[..8].try_into().unwrap()
}

/// `shop stats`'s `"ticks"`: (rows, distinct).
fn ticks(db: &str) -> (i64, i64) {
    let json = run(db, &["stats"]);
    let numbers = numbers(&json);
    assert!(json.contains(r#""ticks": {"rows": "#), "{json}");
    (numbers[8], numbers[9])
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

// ---------------------------------------------------------------------------------------------
// The job life cycle under crashes, deploys, clock skew and a small connection budget.

/// Migrates and places `orders` orders, none declined: order `n` has id `n`.
fn placed_all(db: &str, orders: u32) {
    run(db, &["migrate"]);
    let out = run(db, &["place", "--orders", &orders.to_string()]);
    assert!(
        out.starts_with(&format!("placed {orders} order(s)")),
        "{out}"
    );
}

/// Runs `shop worker --until-idle` with `args` again and again while it dies (here: aborts),
/// at most `runs` times; how many runs died.
fn until_it_survives(db: &str, args: &[&str], runs: usize) -> usize {
    let until_idle = [args, &["--until-idle"]].concat();
    for died in 0..runs {
        if spawn_worker(db, &until_idle).wait().unwrap().success() {
            return died;
        }
    }
    panic!("the worker died {runs} times in a row");
}

/// `--crash-on-order` makes one job abort its worker every time it runs (before the provider
/// is called). The jobs running beside it are charged once, then run alone and succeed; the
/// poison job alone ends dead after its 5 attempts.
#[test]
fn a_job_that_aborts_its_worker_dies_alone_and_every_other_email_is_sent() {
    for db in Db::all() {
        placed_all(&db.url, 40);
        let args = [
            "--concurrency",
            "8",
            "--email-delay-ms",
            "30",
            "--lease-ms",
            "600",
            "--retry-base-ms",
            "5",
            "--crash-on-order",
            "3",
        ];
        let died = until_it_survives(&db.url, &args, 12);
        assert_eq!(
            died, 5,
            "{}: one abort per attempt of the poison job",
            db.url
        );
        let [orders, emails, _attempts, pending, running, dead] = stats(&db.url);
        assert_eq!((orders, emails), (40, 39), "{}", db.url);
        assert_eq!((pending, running, dead), (0, 0, 1), "{}", db.url);
    }
}

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A deploy: worker A gets SIGTERM while its handlers (4 s each) outlive its lease (1.5 s),
/// and worker B starts at once. A keeps renewing its lease until its handlers finish, so B
/// takes none of their jobs: one provider call per email.
#[test]
fn a_worker_stopped_with_sigterm_keeps_its_lease_until_its_handlers_finish() {
    for db in Db::all() {
        placed_all(&db.url, 24);
        let args = [
            "--concurrency",
            "24",
            "--email-delay-ms",
            "4000",
            "--lease-ms",
            "1500",
        ];
        let a = spawn_worker(&db.url, &args);
        wait_for(|| stats(&db.url)[2] >= 24); // every handler has called the provider
        terminate(&a);
        let b = spawn_worker(&db.url, &[&args[..], &["--until-idle"]].concat());
        let [a, b] = [a, b].map(|mut worker| worker.wait().unwrap());
        assert!(a.success() && b.success(), "{}: {a}, {b}", db.url);
        let [_, emails, attempts, pending, running, dead] = stats(&db.url);
        assert_eq!((emails, attempts), (24, 24), "{}", db.url);
        assert_eq!((pending, running, dead), (0, 0, 0), "{}", db.url);
    }
}

/// `faketime`, or `None` (with a message) when it is not installed outside CI.
fn faketime() -> Option<PathBuf> {
    let found = Command::new("faketime")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    match found {
        true => Some(PathBuf::from("faketime")),
        false if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("faketime is required under CI (`apt-get install faketime`)")
        }
        false => {
            eprintln!("skipping: faketime is not installed");
            None
        }
    }
}

/// `shop worker` with `args`, its clock shifted by `offset` (`"+120s"`).
fn spawn_skewed_worker(faketime: &PathBuf, offset: &str, db: &str, args: &[&str]) -> Child {
    Command::new(faketime)
        .args(["-f", offset])
        .arg(shop())
        .args(["--db", db, "worker"])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Two workers on one database, one of them 120 s ahead (then behind): neither takes the other's
/// live jobs (one provider call per email), and a worker that was killed has its jobs rescued
/// by the skewed one within about a lease, not 120 s late or early.
#[test]
fn a_worker_whose_clock_is_two_minutes_off_takes_no_live_job_and_rescues_in_time() {
    let Some(faketime) = faketime() else {
        return;
    };
    for offset in ["+120s", "-120s"] {
        for db in Db::all() {
            placed_all(&db.url, 300);
            let args = [
                "--concurrency",
                "4",
                "--email-delay-ms",
                "20",
                "--lease-ms",
                "1500",
                "--until-idle",
            ];
            let mut honest = spawn_worker(&db.url, &args);
            let mut skewed = spawn_skewed_worker(&faketime, offset, &db.url, &args);
            assert!(honest.wait().unwrap().success());
            assert!(skewed.wait().unwrap().success());
            let [_, emails, attempts, ..] = stats(&db.url);
            assert_eq!((emails, attempts), (300, 300), "{offset} {}", db.url);

            // A worker killed mid-run: the skewed one rescues its jobs after about a lease.
            placed_all(&db.url, 60);
            let slow = [
                "--concurrency",
                "8",
                "--email-delay-ms",
                "400",
                "--lease-ms",
                "1500",
            ];
            let mut doomed = spawn_worker(&db.url, &slow);
            wait_for(|| stats(&db.url)[4] >= 8); // 8 running
            doomed.kill().unwrap();
            doomed.wait().unwrap();
            let start = Instant::now();
            let until_idle = [&slow[..], &["--until-idle"]].concat();
            let mut rescuer = spawn_skewed_worker(&faketime, offset, &db.url, &until_idle);
            assert!(rescuer.wait().unwrap().success());
            let took = start.elapsed();
            // 60 jobs at 8 at a time, 400 ms each: 3.2 s of work, plus a lease of waiting.
            assert!(
                took < Duration::from_secs(12),
                "{offset} {}: {took:?}",
                db.url
            );
            let [orders, emails, .., pending, running, dead] = stats(&db.url);
            assert_eq!(
                (emails, pending, running, dead),
                (orders, 0, 0, 0),
                "{offset}"
            );
        }
    }
}

/// A login role of the test's own with `CONNECTION LIMIT limit` and every right on `schema`'s
/// tables, and no right to create anything; dropped on drop.
struct LimitedRole {
    name: String,
}

impl LimitedRole {
    fn new(schema: &str, limit: u32) -> LimitedRole {
        let name = format!("shop_role_{}", uuid::Uuid::now_v7().simple());
        postgres(format!(
            "CREATE ROLE {name} LOGIN CONNECTION LIMIT {limit};
             GRANT USAGE ON SCHEMA {schema} TO {name};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {name};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {name};"
        ))
        .unwrap();
        LimitedRole { name }
    }

    /// `url` (the superuser's, with a search path) as this role.
    fn url(&self, url: &str) -> String {
        url.replacen(
            "postgres://postgres@",
            &format!("postgres://{}@", self.name),
            1,
        )
    }
}

impl Drop for LimitedRole {
    fn drop(&mut self) {
        let name = &self.name;
        let _ = postgres(format!("DROP OWNED BY {name}; DROP ROLE {name}"));
    }
}

/// 200 jobs at once, each waiting 50 ms on the provider before it writes, under a role that
/// may open 25 connections: handlers hold a connection only while they write, and the worker's
/// own 4 stay apart, so nothing waits for a connection it cannot get. The role has no DDL
/// rights: with the schema current, starting the worker changes nothing.
#[test]
fn concurrency_200_runs_on_a_role_limited_to_25_connections() {
    for db in Db::all() {
        let Some(schema) = db.schema.clone() else {
            continue; // PostgreSQL's connection limit
        };
        placed_all(&db.url, 800);
        let role = LimitedRole::new(&schema, 25);
        let start = Instant::now();
        let output = Command::new(shop())
            .args(["--db", &role.url(&db.url), "worker", "--until-idle"])
            .args([
                "--concurrency",
                "200",
                "--pool",
                "10",
                "--email-delay-ms",
                "50",
            ])
            .output()
            .unwrap();
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.is_empty(), "no connection error: {stderr}");
        let [_, emails, attempts, pending, running, dead] = stats(&db.url);
        assert_eq!((emails, attempts), (800, 800));
        assert_eq!((pending, running, dead), (0, 0, 0));
        // 800 × 50 ms / 200 = 0.2 s of waiting; generous for a loaded machine.
        assert!(took < Duration::from_secs(20), "{took:?}");

        // A budget that cannot fit the worker's own connections beside the pool's is refused
        // at start, saying what to change.
        let tight = LimitedRole::new(&schema, 3);
        let output = Command::new(shop())
            .args([
                "--db",
                &tight.url(&db.url),
                "worker",
                "--until-idle",
                "--pool",
                "1",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("the worker needs 4 database connections of its own")
                && stderr.contains("CONNECTION LIMIT"),
            "{stderr}"
        );
    }
}

/// An operator (this process) pauses the `email` queue while a worker runs in another process:
/// orders placed meanwhile get no email within two seconds, and get them once resumed.
#[test]
fn a_worker_process_obeys_a_paused_queue_within_a_second() {
    for db in Db::all() {
        let url = db.url.as_str();
        run(url, &["migrate"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let operator = |pause: bool| {
            runtime.block_on(async {
                let pool = signals_queue::Pool::connect(url, 1).await.unwrap();
                let queue = signals_queue::AsyncQueue::new(pool.clone());
                match pause {
                    true => queue.pause("email").await.unwrap(),
                    false => queue.resume("email").await.unwrap(),
                }
                pool.close().await;
            })
        };
        let mut worker = spawn_worker(url, &[]);
        // The worker is up: its first order's email is sent.
        run(url, &["place", "--orders", "1"]);
        wait_for(|| stats(url)[1] == 1);
        operator(true);
        // Maintenance reads the paused queues every tick (at most half a second).
        std::thread::sleep(Duration::from_secs(1));
        run(url, &["place", "--orders", "5"]);
        std::thread::sleep(Duration::from_secs(2));
        let [orders, emails, _, pending, ..] = stats(url);
        assert_eq!((orders, emails, pending), (6, 1, 5), "{url}: paused");
        operator(false);
        wait_for(|| stats(url)[1] == 6);
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
}

/// `GET /metrics` from `address`, as text (plain HTTP/1.0 over a socket).
fn scrape(address: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of the first sample of `series` whose line contains each of `labels`.
fn sample(text: &str, series: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{series}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// `shop worker --metrics-listen ADDR` serves the queue's metrics as Prometheus text: the
/// welcome emails it sent are counted under their handler and queue, with the run time.
#[test]
fn a_worker_serves_its_metrics_to_prometheus() {
    for db in Db::all() {
        let url = db.url.as_str();
        run(url, &["migrate"]);
        // A free port: bind, read it, let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut worker = spawn_worker(url, &["--metrics-listen", &address]);
        run(url, &["place", "--orders", "3"]);
        wait_for(|| stats(url)[1] == 3);
        let labels = &["::send_welcome_email\"", "queue=\"email\""];
        let mut text = String::new();
        wait_for(|| {
            text = scrape(&address).unwrap_or_default();
            sample(&text, "signals_jobs_succeeded_total", labels) == Some(3.0)
        });
        assert_eq!(
            sample(&text, "signals_jobs_started_total", labels),
            Some(3.0),
            "{url}: {text}"
        );
        assert_eq!(
            sample(&text, "signals_job_run_seconds_count", labels),
            Some(3.0),
            "{url}: {text}"
        );
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
}

/// The follow-up email is a delayed handler: each order writes its job, due three days later;
/// `worker --until-idle` sends the welcome emails and returns without waiting for them, and
/// `stats`'s jobs counts stay the welcome email's.
#[test]
fn a_delayed_follow_up_waits_three_days_and_keeps_no_worker_busy() {
    for db in Db::all() {
        let url = db.url.as_str();
        placed_all(url, 2);
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let started = Instant::now();
        run(url, &["worker", "--until-idle"]);
        assert!(started.elapsed() < Duration::from_secs(30), "{url}");
        let [_, emails, _, pending, running, dead] = stats(url);
        assert_eq!((emails, pending, running, dead), (2, 0, 0, 0), "{url}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let scheduled = runtime.block_on(async {
            let pool = signals_queue::Pool::connect(url, 1).await.unwrap();
            let queue = signals_queue::AsyncQueue::new(pool.clone());
            let filter = signals_queue::JobFilter::new().state(signals_queue::JobStatus::Scheduled);
            let jobs = queue.jobs(&filter, 0, 10).await.unwrap();
            pool.close().await;
            jobs
        });
        assert_eq!(scheduled.len(), 2, "{url}: {scheduled:?}");
        let three_days = 3 * 24 * 3600 * 1000;
        for job in &scheduled {
            assert!(
                job.handler.ends_with("::send_follow_up_email"),
                "{url}: {job:?}"
            );
            // Due three days after its order's statement (placed before `before`, by seconds).
            let early = job.due_at - (before + three_days);
            assert!(
                early.abs() < 120_000,
                "{url}: due {early} ms off three days: {job:?}"
            );
        }
    }
}

/// One value read from the shop's database (in a runtime of its own).
fn query_one(url: &str, sql: &'static str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = signals_queue::Pool::connect(url, 1).await.unwrap();
        let value: Option<String> = signals_queue::with_db!(&pool, |pool| sqlx::query_scalar(sql)
            .fetch_optional(pool)
            .await
            .unwrap());
        pool.close().await;
        value
    })
}

/// The tick times the heartbeat handler wrote, in order.
fn tick_times(url: &str) -> Vec<i64> {
    let sql = "SELECT CAST(tick_ms AS TEXT) FROM ticks ORDER BY tick_ms";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = signals_queue::Pool::connect(url, 1).await.unwrap();
        let rows: Vec<String> = signals_queue::with_db!(&pool, |pool| sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .unwrap());
        pool.close().await;
        rows.iter().map(|row| row.parse().unwrap()).collect()
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Three worker processes race to fire the shop's every-second heartbeat; the leader among
/// them is killed with SIGKILL. Each tick is fired once (as many rows as distinct ticks), a
/// survivor takes over within the leader's lease, and the ticks missed meanwhile are fired as
/// one, not one by one.
#[test]
fn a_periodic_signal_fires_once_per_tick_with_three_workers_racing_and_the_leader_killed() {
    for db in Db::all() {
        let url = db.url.as_str();
        run(url, &["migrate"]);
        let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(url, &[])).collect();
        wait_for(|| ticks(url).0 >= 3);
        let leader =
            "SELECT w.label FROM signals_leader AS l JOIN signals_workers AS w ON w.id = l.worker";
        let label = query_one(url, leader).expect("a leader");
        let pid: u32 = label.rsplit(':').next().unwrap().parse().unwrap();
        let index = workers
            .iter()
            .position(|worker| worker.id() == pid)
            .unwrap_or_else(|| panic!("{url}: the leader {label} is none of the workers"));
        let mut killed = workers.remove(index);
        killed.kill().unwrap(); // SIGKILL
        killed.wait().unwrap();
        let killed_at = now_ms();
        // A survivor leads within the lease (5 s) and fires again.
        wait_for(|| {
            tick_times(url)
                .last()
                .is_some_and(|last| *last > killed_at + 1_000)
        });
        std::thread::sleep(Duration::from_secs(3));
        for worker in &workers {
            terminate(worker);
        }
        for mut worker in workers {
            assert!(worker.wait().unwrap().success(), "{url}");
        }
        let (rows, distinct) = ticks(url);
        assert_eq!(rows, distinct, "{url}: a tick fired twice");
        let times = tick_times(url);
        assert!(
            times.iter().all(|tick| tick % 1_000 == 0),
            "{url}: {times:?}"
        );
        let gaps: Vec<i64> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let longest = gaps.iter().copied().max().unwrap_or(0);
        assert!(
            longest <= 8_000,
            "{url}: no leader for {longest} ms: {times:?}"
        );
        // The leader's lease outlived it by 4 to 5 s: those ticks were missed, and only the
        // latest of them fired (had each been fired late, no gap would show).
        assert!(
            longest >= 2_000,
            "{url}: missed ticks were fired one by one: {times:?}"
        );
        // Ticks missed while no one led are fired once, not one by one: after the gap, the
        // ticks follow second by second.
        let after = times
            .iter()
            .filter(|tick| **tick > killed_at + 1_000)
            .count();
        assert!(after >= 3, "{url}: {times:?}");
        let relabel = query_one(url, leader);
        assert!(
            relabel.is_none(),
            "{url}: the last leader resigned at shutdown: {relabel:?}"
        );
    }
}
