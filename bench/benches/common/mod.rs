//! What the queue and broker benchmark programs share: clocks, statistics, the machine's load.
//! Each program uses some of it.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// PostgreSQL's URL: `SIGNALS_BENCH_POSTGRES_URL`, else the tests' `SIGNALS_TEST_POSTGRES_URL`,
/// else this machine's (`postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_url() -> String {
    env_url(
        "SIGNALS_BENCH_POSTGRES_URL",
        "SIGNALS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
}

/// NATS's URL: `SIGNALS_BENCH_NATS_URL`, else the tests' `SIGNALS_TEST_NATS_URL`, else this
/// machine's (`nats://127.0.0.1:4222`).
pub fn nats_url() -> String {
    env_url(
        "SIGNALS_BENCH_NATS_URL",
        "SIGNALS_TEST_NATS_URL",
        "nats://127.0.0.1:4222",
    )
}

fn env_url(bench: &str, test: &str, default: &str) -> String {
    std::env::var(bench)
        .or_else(|_| std::env::var(test))
        .unwrap_or_else(|_| default.to_owned())
}

/// Milliseconds since the Unix epoch, as the queue stores times.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The process's first call of this: a common origin for timestamps shared between threads.
pub fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds from [`origin`] to `at`.
pub fn since_origin(at: Instant) -> i64 {
    at.saturating_duration_since(origin()).as_nanos() as i64
}

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `q` quantile (0 to 1) of `values`, nearest rank.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The median of `values`.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The smallest and largest of `values`.
pub fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// The machine's load averages (1, 5, 15 min), printed with every table.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The domain row, and the payload of every job here (about 100 bytes of JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Order {
    pub order_id: i64,
    pub customer: String,
    pub amount_cents: i64,
    pub currency: String,
}

impl Order {
    pub fn new(order_id: i64) -> Order {
        Order {
            order_id,
            customer: format!("customer-{order_id:08}@example.com"),
            amount_cents: 4_999,
            currency: "EUR".to_owned(),
        }
    }
}
