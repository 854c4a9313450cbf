//! `notify` inside a large program: 1,000 signal types with 5 handlers each (generated), plus
//! the benchmarks' 3-handler `Tick`. Measures, in one run:
//! - the cost of notifying `Tick` here, to compare with the small `dispatch` program;
//! - the first notify of all 1,000 signal types in a fresh process (the index is built then);
//! - process start-up with 5,000 handlers registered, next to a program with none.
//!
//! The last two spawn fresh processes of this binary (and of `startup_baseline`) and report
//! medians. Results go to stdout and to `target/bench-results/scale.json`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use signals_bench::{Counters, Tick};
use signals_core::notify;

include!(concat!(env!("OUT_DIR"), "/scale.rs"));

/// What a child process is asked to do.
const MODE: &str = "SIGNALS_BENCH_MODE";
/// Fresh processes per measurement.
const RUNS: usize = 31;

fn main() {
    match std::env::var(MODE).as_deref() {
        Ok("first-notify") => return first_notify(),
        Ok("exit") => return,
        _ => {}
    }
    let mut criterion = Criterion::default().configure_from_args();
    let mut counters = Counters::default();
    let tick = Tick { amount: 3 };
    criterion.bench_function("scale/signals_notify_1000_signals", |b| {
        b.iter(|| notify(black_box(&tick), black_box(&mut counters)).unwrap())
    });
    criterion.final_summary();
    if std::env::args().any(|arg| arg == "--list" || arg == "--test") {
        return;
    }
    report_processes();
}

/// In a fresh process: notify each of the 1,000 generated signals once; print the time taken.
fn first_notify() {
    let mut counters = Counters::default();
    let start = Instant::now();
    notify_each(&mut counters);
    let elapsed = start.elapsed();
    assert_eq!(counters.total, 5 * 1_000);
    println!("{}", elapsed.as_nanos());
}

fn report_processes() {
    let this = std::env::current_exe().expect("the path of this benchmark");
    let baseline = sibling("startup_baseline");

    let first_notify = median((0..RUNS).map(|_| {
        let out = run(Command::new(&this).env(MODE, "first-notify"));
        let nanos: u64 = out.trim().parse().expect("the child prints nanoseconds");
        Duration::from_nanos(nanos)
    }));
    let (with_handlers, without) = interleaved_startup(&this, &baseline);

    println!("first notify of 1,000 signal types: {first_notify:?} (median of {RUNS} processes)");
    println!(
        "process start to exit: {with_handlers:?} with 5,000 handlers, {without:?} with none (medians of {RUNS})"
    );
    let json = format!(
        "{{\"first_notify_1000_signals_ns\": {}, \"startup_5000_handlers_ns\": {}, \"startup_baseline_ns\": {}, \"runs\": {RUNS}}}\n",
        first_notify.as_nanos(),
        with_handlers.as_nanos(),
        without.as_nanos()
    );
    let dir = target_dir().join("bench-results");
    std::fs::create_dir_all(&dir).expect("creating target/bench-results");
    std::fs::write(dir.join("scale.json"), json).expect("writing scale.json");
}

/// Start-up of this binary (5,000 handlers) and of the baseline, alternating run by run.
fn interleaved_startup(this: &Path, baseline: &Path) -> (Duration, Duration) {
    let mut with_handlers = Vec::with_capacity(RUNS);
    let mut without = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        with_handlers.push(time(Command::new(this).env(MODE, "exit")));
        without.push(time(&mut Command::new(baseline)));
    }
    (median(with_handlers), median(without))
}

fn time(command: &mut Command) -> Duration {
    let start = Instant::now();
    run(command);
    start.elapsed()
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("spawning a benchmark process");
    assert!(output.status.success(), "{command:?} failed: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn median(samples: impl IntoIterator<Item = Duration>) -> Duration {
    let mut samples: Vec<_> = samples.into_iter().collect();
    samples.sort();
    samples[samples.len() / 2]
}

/// Another benchmark executable built beside this one: `target/release/deps/NAME-HASH`.
fn sibling(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .expect("the path of this benchmark")
        .parent()
        .expect("deps directory")
        .to_path_buf();
    let prefix = format!("{name}-");
    std::fs::read_dir(&deps)
        .expect("reading target/release/deps")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            file.starts_with(&prefix) && path.extension().is_none()
        })
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("`cargo bench` builds `{name}` beside this benchmark"))
}

/// `target/`, two levels above `target/release/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this benchmark");
    exe.ancestors()
        .nth(3)
        .expect("target directory")
        .to_path_buf()
}
