//! What another service's backlog in the same SQLite file costs a claim: a claim of 10 jobs of
//! our handler, timed, in a file that holds only our jobs and in one that also holds 100,000 due
//! jobs of a handler we do not run (same priority, older), side by side in one run. Rounds
//! interleave the variants (in alternating order); each variant gets a fresh file per round.
//!
//! Ours is `signals_queue`'s claim as the async worker runs it on SQLite (through sqlx); beside
//! it, for reference, the claim of the previous release (one index in priority order, the
//! handlers filtered row by row), copied here and run the same way.
//!
//! ```text
//! cargo bench -p signals-bench --bench claim_beside
//! ROUNDS=1 CLAIMS=20 FOREIGN=10000 cargo bench -p signals-bench --bench claim_beside
//! ```
//!
//! Sizes: `ROUNDS` (5), `CLAIMS` timed per round and variant (100), `FOREIGN` due jobs of the
//! other handler (100,000). The program runs only under `cargo bench`.

use std::time::Instant;

use signals_queue::__broker::{acquire, claim, complete_many, token, ClaimRequest};
use signals_queue::{AsyncQueue, Pool};
use sqlx::Row as _;

mod common;
use common::{load, median, now_ms, percentile};

/// Jobs per claim.
const LIMIT: usize = 10;

/// Our handler, as the claim statements take it.
const HANDLERS: &str = r#"[{"name": "bench.mine", "signal": "Mine"}]"#;

/// The previous release's SQLite claim (`sqlite_sql::CLAIM` before migration 5's per-handler
/// indexes), copied: one index in claim order (`signals_jobs_pending`), each row's handler
/// checked against `?2`.
const PREVIOUS_CLAIM: &str = "
UPDATE signals_jobs
SET state = 'running', attempt = attempt + 1, token = ?5, worker = ?6, lease_until = NULL
WHERE id IN (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ?1
      AND EXISTS (SELECT 1 FROM json_each(?2) AS h
                  WHERE handler = json_extract(h.value, '$.name')
                    AND (signal = json_extract(h.value, '$.signal')
                         OR substr(signal, -length(json_extract(h.value, '$.signal')) - 2)
                            = '::' || json_extract(h.value, '$.signal')))
      AND (crashes > 0) = ?3
    ORDER BY priority DESC, run_at, id
    LIMIT +?4)
RETURNING id, event_id, handler, payload, attempt, priority, run_at";

/// The variants, in table order: (name, the previous claim?, foreign jobs in the file?).
const VARIANTS: [(&str, bool, bool); 4] = [
    ("ours, our jobs alone", false, false),
    ("ours, beside the foreign backlog", false, true),
    ("previous release's, our jobs alone", true, false),
    ("previous release's, beside the foreign backlog", true, true),
];

struct Settings {
    rounds: usize,
    claims: usize,
    foreign: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Settings {
            rounds: var("ROUNDS", 5),
            claims: var("CLAIMS", 100),
            foreign: var("FOREIGN", 100_000),
        }
    }
}

/// A fresh migrated file with `foreign` due jobs of another handler (written first: older,
/// same priority) and enough due jobs of ours for `claims` claims.
async fn fresh(dir: &tempfile::TempDir, n: usize, foreign: usize, claims: usize) -> Pool {
    let url = format!("sqlite://{}", dir.path().join(format!("{n}.db")).display());
    let pool = Pool::connect(&url, 2).await.expect("SQLite");
    AsyncQueue::new(pool.clone())
        .migrate()
        .await
        .expect("migrate");
    let mut conn = acquire(&pool).await.expect("connection");
    let signals_queue::Tx::Sqlite(sqlite) = conn.tx() else {
        unreachable!("a SQLite pool")
    };
    for (handler, signal, jobs, run_at) in [
        ("other.publish", "other::Published", foreign, 0),
        ("bench.mine", "bench::Mine", claims * LIMIT, 1),
    ] {
        sqlx::query(
            "
WITH RECURSIVE n (i) AS (SELECT 1 WHERE ?3 > 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, max_attempts,
                          run_at, created_at)
SELECT 'e', ?2, ?1, 'default', 0, '{\"order_id\": 1}', 25, ?4, 0 FROM n",
        )
        .bind(handler)
        .bind(signal)
        .bind(jobs as i64)
        .bind(run_at)
        .execute(&mut *sqlite)
        .await
        .expect("jobs");
    }
    drop(conn);
    pool
}

/// `claims` claims of [`LIMIT`] jobs in a fresh file, each timed (µs); the jobs of each are
/// completed after its timing.
async fn round(dir: &tempfile::TempDir, n: usize, variant: usize, settings: &Settings) -> Vec<f64> {
    let (_, previous, beside) = VARIANTS[variant];
    let foreign = if beside { settings.foreign } else { 0 };
    let pool = fresh(dir, n, foreign, settings.claims).await;
    let mut conn = acquire(&pool).await.expect("connection");
    let mut times = Vec::with_capacity(settings.claims);
    for _ in 0..settings.claims {
        let token = token();
        let started = Instant::now();
        let ids: Vec<i64> = match previous {
            false => {
                let request = ClaimRequest {
                    handlers: HANDLERS,
                    limit: LIMIT,
                    suspects: false,
                    worker: 1,
                    now: None,
                    token,
                };
                let claimed = claim(conn.tx(), &request).await.expect("claim");
                claimed.iter().map(|job| job.id).collect()
            }
            true => {
                let signals_queue::Tx::Sqlite(sqlite) = conn.tx() else {
                    unreachable!("a SQLite pool")
                };
                let rows = sqlx::query(PREVIOUS_CLAIM)
                    .bind(now_ms())
                    .bind(HANDLERS)
                    .bind(false)
                    .bind(LIMIT as i64)
                    .bind(token)
                    .bind(1_i64)
                    .fetch_all(&mut *sqlite)
                    .await
                    .expect("previous claim");
                rows.iter().map(|row| row.get::<i64, _>(0)).collect()
            }
        };
        times.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(ids.len(), LIMIT, "every claim takes {LIMIT} of our jobs");
        let done: Vec<(i64, i64)> = ids.iter().map(|&id| (id, token)).collect();
        complete_many(conn.tx(), &done, None)
            .await
            .expect("complete");
    }
    drop(conn);
    pool.close().await;
    times
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("claim_beside benchmark: run it with `cargo bench -p signals-bench --bench claim_beside`");
        return;
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# A claim beside another service's backlog (SQLite through sqlx)\n");
    println!(
        "{cores} cores; {} rounds, interleaved; {} timed claims of {LIMIT} per round and variant; \
         {} foreign due jobs; load average at start: {}\n",
        settings.rounds,
        settings.claims,
        settings.foreign,
        load()
    );
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut n = 0;
    for round_number in 0..settings.rounds {
        let order: Vec<usize> = match round_number % 2 {
            0 => (0..VARIANTS.len()).collect(),
            _ => (0..VARIANTS.len()).rev().collect(),
        };
        for variant in order {
            n += 1;
            let round_times = runtime.block_on(round(&dir, n, variant, &settings));
            times[variant].extend(round_times);
        }
        eprintln!(
            "  round {} of {} done (load {})",
            round_number + 1,
            settings.rounds,
            load()
        );
    }
    println!("| claim of {LIMIT} | median µs | p90 µs | vs the same claim, our jobs alone |");
    println!("| --- | ---: | ---: | ---: |");
    for (variant, (name, _, _)) in VARIANTS.iter().enumerate() {
        let alone = median(&times[variant - variant % 2]);
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}× |",
            median(&times[variant]),
            percentile(&times[variant], 0.9),
            median(&times[variant]) / alone
        );
    }
    println!("\nload average at end: {}", load());
}
