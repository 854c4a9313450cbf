//! The `shop` example as a real process: workers killed with SIGKILL at any moment and workers
//! racing on one database end with one email per committed order and nothing left over.

use std::path::{Path, PathBuf};
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

fn run(db: &Path, args: &[&str]) -> String {
    let output = Command::new(shop())
        .arg("--db")
        .arg(format!("sqlite://{}", db.display()))
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

fn spawn_worker(db: &Path, args: &[&str]) -> Child {
    Command::new(shop())
        .arg("--db")
        .arg(format!("sqlite://{}", db.display()))
        .arg("worker")
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// `shop stats` as (orders, emails, email_attempts, pending, running, dead).
fn stats(db: &Path) -> [i64; 6] {
    let json = run(db, &["stats"]);
    let numbers: Vec<i64> = json
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    numbers
        .try_into()
        .unwrap_or_else(|_| panic!("unexpected stats: {json}"))
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn placed(orders: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    run(&db, &["migrate"]);
    let out = run(&db, &["place", "--orders", orders, "--decline-every", "7"]);
    assert!(out.starts_with("placed "), "{out}");
    (dir, db)
}

#[test]
fn workers_killed_with_sigkill_and_restarted_send_one_email_per_committed_order() {
    let (_dir, db) = placed("240");
    let committed = 240 - 240 / 7;
    let mut running_at_kills = 0;
    for emails_before_kill in [30, 90] {
        let mut worker = spawn_worker(
            &db,
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
        wait_for(|| stats(&db)[1] >= emails_before_kill);
        worker.kill().unwrap(); // SIGKILL: no chance to release anything
        worker.wait().unwrap();
        running_at_kills += stats(&db)[4];
    }
    let status = spawn_worker(
        &db,
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
    let [orders, emails, attempts, pending, running, dead] = stats(&db);
    assert_eq!((orders, emails), (committed, committed));
    assert_eq!((pending, running, dead), (0, 0, 0));
    assert!(
        attempts - emails <= running_at_kills,
        "{attempts} attempts for {emails} emails; {running_at_kills} jobs were running at the kills"
    );
}

#[test]
fn two_worker_processes_at_once_end_the_same_way() {
    let (_dir, db) = placed("200");
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
    let (mut first, mut second) = (spawn_worker(&db, &args), spawn_worker(&db, &args));
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    let [orders, emails, attempts, pending, running, dead] = stats(&db);
    assert_eq!(orders, committed);
    // A job can die after 5 failures (0.2^5 each): those are retried, as an operator would.
    if dead > 0 {
        run(&db, &["retry-dead"]);
        assert!(spawn_worker(&db, &args).wait().unwrap().success());
    }
    let [_, emails_after, _, pending_after, running_after, dead_after] = stats(&db);
    assert_eq!(emails_after, committed);
    assert_eq!((pending_after, running_after, dead_after), (0, 0, 0));
    assert!(emails <= committed && attempts >= emails && pending + running == 0);
}

#[test]
fn a_bad_database_url_is_one_line_and_a_failure() {
    for (url, expected) in [
        ("mysql://localhost/shop", "shop: `--db mysql://localhost/shop`: expected a URL such as `sqlite://shop.db` (see `shop --help`)\n"),
        ("sqlite:///nonexistent/dir/shop.db", "shop: /nonexistent/dir/shop.db: unable to open database file: /nonexistent/dir/shop.db\n"),
    ] {
        let output = Command::new(shop()).args(["--db", url, "stats"]).output().unwrap();
        assert!(!output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
    }
}
