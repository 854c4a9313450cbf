//! The `in_process` example (axum server, worker and relay in one process) as a real process:
//! orders placed over HTTP get their emails from the worker of the same process, and one
//! SIGTERM stops the server, the worker and the process, which exits cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An example binary built beside this test (`cargo test` builds a package's examples).
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let debug = deps.parent().unwrap().parent().unwrap();
    debug
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// `POST path` over HTTP/1.1; the status code and body.
fn post(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// `shop stats` of the database: `"emails": n`.
fn emails(db: &str) -> i64 {
    let output = Command::new(example("shop"))
        .args(["--db", db, "stats"])
        .output()
        .unwrap();
    let json = String::from_utf8(output.stdout).unwrap();
    let at = json.find("\"emails\":").expect("stats has emails") + "\"emails\":".len();
    json[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn one_sigterm_stops_the_server_and_the_worker_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("shop.db").display());
    let mut child = Command::new(example("in_process"))
        .args(["--db", &db, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();

    for i in 0..5 {
        let (status, body) = post(
            &addr,
            &format!("/orders?email=c{i}@example.com&total_cents=100"),
        );
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while emails(&db) < 5 {
        assert!(Instant::now() < deadline, "the emails were not sent");
        std::thread::sleep(Duration::from_millis(50));
    }

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), "stopped: 5 jobs completed");
    assert_eq!(emails(&db), 5);
}
