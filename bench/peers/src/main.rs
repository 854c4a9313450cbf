//! Throughput of two published Rust job queues on PostgreSQL, measured the way
//! `signals-queue`'s own queue benchmark (`bench/QUEUE.md`) measures ours, so
//! that the numbers can be set side by side in one run on one machine.
//!
//! Peers: [`graphile_worker`] (the Rust port of graphile-worker) and `apalis`
//! with its PostgreSQL backend `apalis-postgres`; the exact versions (from this
//! package's Cargo.lock) are printed in every row.
//!
//! # What is measured
//!
//! - **Enqueue**: `ENQUEUE_JOBS` (3,000) orders, each one transaction on one
//!   connection: `BEGIN`, `INSERT INTO orders ..` (the domain row), the job,
//!   `COMMIT`. Both peers can add a job inside the caller's transaction
//!   (graphile_worker: `WorkerUtils::with_executor(&mut tx).add_job`; apalis:
//!   `apalis_postgres::queries::push_tasks(&mut *tx, ..)`); apalis's ordinary
//!   `push` cannot, so it is shown too, after the domain row's own commit. A
//!   reference row writes the domain row alone. Reported in transactions/s.
//! - **Drain**: a backlog of `JOBS` (20,000) noop jobs, the same ~100-byte JSON
//!   order as ours (`{"order_id":1,"customer":"customer-00000001@example.com",
//!   "amount_cents":4999,"currency":"EUR"}`), written beforehand with each
//!   library's batch API (not timed). Then one worker of the library with
//!   concurrency 1, 4 and 16 (`CONCURRENCIES`) runs a noop handler that bumps
//!   an `AtomicUsize`; the time runs from the worker's start until the handler
//!   has run for every job (its shutdown is not timed). Reported in jobs/s. A
//!   drain still unfinished after `DRAIN_TIMEOUT_SECS` (180) is cut off and
//!   reported with its partial rate, marked as timed out.
//!
//!   graphile_worker is shown twice. With its defaults a backlog drains at
//!   about one job per slot per poll interval (1 s), so that row is run at
//!   concurrency 4 only and cut off after `PACED_TIMEOUT_SECS` (30); the other
//!   rows use the "Throughput-oriented worker" settings of the crate's own
//!   guide (local queue, completion batching). apalis runs with its defaults
//!   (fetches of 10, tasks locked, results persisted), plus one row at
//!   concurrency 4 with fetches of 100 (`Config::batch_size(100)`).
//!
//! Every run of every variant gets a fresh database of its own on the server
//! (`CREATE DATABASE`, the library's migrations, and `DROP DATABASE .. WITH
//! (FORCE)` afterwards), with a pool of 20 connections. Variants run once per
//! round, `ROUNDS` (3) rounds, in alternating order (forward, backward, ..);
//! the tables give the median and min–max over the rounds. The load average
//! is printed at the start and at the end.
//!
//! Compared with ours (`bench/benches/queue_async.rs`, its PostgreSQL rows):
//! the same server and URL, the same payload and `orders` table, the same
//! 3,000 one-transaction orders with a domain row, the same 20,000-job noop
//! backlog, and concurrency 4 as the point to compare. Ours gets a fresh
//! schema per run, the peers a fresh database (apalis's migrations use the
//! fixed schema `apalis` and record themselves in `public._sqlx_migrations`,
//! so a new database is the clean start; graphile_worker is treated the same).
//!
//! ```text
//! cargo build --release --manifest-path bench/peers/Cargo.toml
//! bench/peers/target/release/signals-bench-peers                 # everything, 3 rounds
//! ROUNDS=1 JOBS=5000 bench/peers/target/release/signals-bench-peers drain/apalis
//! ```
//!
//! Arguments, if any, keep only the variants whose key contains one of them
//! (keys: `enqueue/reference`, `enqueue/graphile`, `enqueue/apalis-tx`,
//! `enqueue/apalis-push`, `drain/graphile-defaults/c4`, `drain/graphile/c4`,
//! `drain/apalis/c16`, `drain/apalis-batch100/c4`, ..).
//! Environment: `SIGNALS_BENCH_POSTGRES_URL` (else `SIGNALS_TEST_POSTGRES_URL`; default
//! `postgres://postgres@127.0.0.1:5432/test`), `ENQUEUE_JOBS`, `JOBS`,
//! `ROUNDS`, `CONCURRENCIES`, `DRAIN_TIMEOUT_SECS`, `PACED_TIMEOUT_SECS`.

mod apalis_pg;
mod common;
mod graphile;

use std::time::Instant;

use apalis_pg::EnqueueMode;
use common::{
    create_orders_table, insert_order, loadavg, BenchResult, FreshDb, OrderPlaced, Sample, Settings,
};
use graphile::Tuning;

/// One thing measured once per round.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// The domain row alone, one transaction each (no queue).
    EnqueueReference,
    /// graphile_worker `add_job` in the order's transaction.
    EnqueueGraphile,
    /// apalis-postgres, in the order's transaction or after it.
    EnqueueApalis(EnqueueMode),
    /// graphile_worker worker draining the backlog with this concurrency and tuning.
    DrainGraphile(usize, Tuning),
    /// apalis worker draining the backlog with this concurrency (and fetch batch, if not the default).
    DrainApalis(usize, Option<usize>),
}

impl Variant {
    /// Key for the command-line filter.
    fn key(self) -> String {
        match self {
            Self::EnqueueReference => "enqueue/reference".into(),
            Self::EnqueueGraphile => "enqueue/graphile".into(),
            Self::EnqueueApalis(EnqueueMode::InTransaction) => "enqueue/apalis-tx".into(),
            Self::EnqueueApalis(EnqueueMode::PushAfterCommit) => "enqueue/apalis-push".into(),
            Self::DrainGraphile(c, Tuning::Defaults) => format!("drain/graphile-defaults/c{c}"),
            Self::DrainGraphile(c, Tuning::Throughput) => format!("drain/graphile/c{c}"),
            Self::DrainApalis(c, None) => format!("drain/apalis/c{c}"),
            Self::DrainApalis(c, Some(b)) => format!("drain/apalis-batch{b}/c{c}"),
        }
    }

    fn is_drain(self) -> bool {
        matches!(self, Self::DrainGraphile(..) | Self::DrainApalis(..))
    }

    /// Library name and exact version for the table.
    fn library(self) -> (&'static str, String) {
        match self {
            Self::EnqueueReference => ("(none)", format!("sqlx {}", env!("PEER_VERSION_SQLX"))),
            Self::EnqueueGraphile | Self::DrainGraphile(..) => {
                ("graphile_worker", graphile::VERSION.into())
            }
            Self::EnqueueApalis(_) | Self::DrainApalis(..) => {
                ("apalis-postgres", apalis_pg::VERSION.into())
            }
        }
    }

    /// What the row measures.
    fn description(self) -> String {
        match self {
            Self::EnqueueReference => "reference: domain row alone".into(),
            Self::EnqueueGraphile => "domain row + `with_executor(&mut tx).add_job` (same tx)".into(),
            Self::EnqueueApalis(EnqueueMode::InTransaction) => {
                "domain row + `queries::push_tasks(&mut *tx, ..)` (same tx)".into()
            }
            Self::EnqueueApalis(EnqueueMode::PushAfterCommit) => {
                "domain row commit, then `storage.push(job)` (own tx, not atomic)".into()
            }
            Self::DrainGraphile(c, Tuning::Defaults) => format!("`Worker`, `concurrency({c})`, defaults otherwise"),
            Self::DrainGraphile(c, Tuning::Throughput) => format!(
                "`Worker`, `concurrency({c})`, guide's throughput settings (local queue 100, poll 500 ms, batch completions 5 ms)"
            ),
            Self::DrainApalis(c, None) => {
                format!("`WorkerBuilder`, `.concurrency({c}).parallelize(tokio::spawn)`, default `Config`")
            }
            Self::DrainApalis(c, Some(b)) => format!(
                "`WorkerBuilder`, `.concurrency({c}).parallelize(tokio::spawn)`, `Config::batch_size({b})`"
            ),
        }
    }

    async fn run(self, settings: &Settings) -> BenchResult<Sample> {
        match self {
            Self::EnqueueReference => enqueue_reference(settings).await,
            Self::EnqueueGraphile => graphile::enqueue(settings).await,
            Self::EnqueueApalis(mode) => apalis_pg::enqueue(settings, mode).await,
            Self::DrainGraphile(c, tuning) => {
                let timeout = match tuning {
                    Tuning::Defaults => settings.paced_timeout.min(settings.drain_timeout),
                    Tuning::Throughput => settings.drain_timeout,
                };
                graphile::drain(settings, c, tuning, timeout).await
            }
            Self::DrainApalis(c, batch) => apalis_pg::drain(settings, c, batch).await,
        }
    }
}

/// Reference: the same transactions with the domain row only.
async fn enqueue_reference(settings: &Settings) -> BenchResult<Sample> {
    let db = FreshDb::create(&settings.url, "reference").await?;
    let result = async {
        create_orders_table(&db.pool).await?;
        let n = settings.enqueue_jobs;
        let started = Instant::now();
        for i in 1..=n as u64 {
            let mut tx = db.pool.begin().await?;
            insert_order(&mut tx, &OrderPlaced::new(i)).await?;
            tx.commit().await?;
        }
        Ok(Sample::new(n, started.elapsed(), false))
    }
    .await;
    db.drop_db().await?;
    result
}

/// All rounds of one variant.
struct Outcome {
    variant: Variant,
    samples: Vec<Sample>,
    errors: Vec<String>,
}

impl Outcome {
    /// Markdown row: library, version, variant, median, min–max, notes.
    fn row(&self) -> String {
        let (library, version) = self.variant.library();
        let mut rates: Vec<f64> = self.samples.iter().map(|s| s.rate).collect();
        rates.sort_by(f64::total_cmp);
        let (median, range) = match rates.len() {
            0 => ("–".to_string(), "–".to_string()),
            n => {
                let median = if n % 2 == 1 {
                    rates[n / 2]
                } else {
                    (rates[n / 2 - 1] + rates[n / 2]) / 2.0
                };
                (
                    fmt_rate(median),
                    format!("{}–{}", fmt_rate(rates[0]), fmt_rate(rates[n - 1])),
                )
            }
        };
        let mut notes = Vec::new();
        let timed_out: Vec<_> = self.samples.iter().filter(|s| s.timed_out).collect();
        if !timed_out.is_empty() {
            let done: Vec<_> = timed_out.iter().map(|s| s.done.to_string()).collect();
            notes.push(format!(
                "timed out in {}/{} rounds (partial rate; jobs done: {})",
                timed_out.len(),
                self.samples.len(),
                done.join(", ")
            ));
        }
        if let Some(first) = self.errors.first() {
            notes.push(format!(
                "failed in {} rounds: {}",
                self.errors.len(),
                first.replace('|', "\\|").replace('\n', " ")
            ));
        }
        format!(
            "| {library} | {version} | {} | {median} | {range} | {} |",
            self.variant.description(),
            notes.join("; ")
        )
    }
}

/// A rate with thousands separators, no decimals.
fn fmt_rate(rate: f64) -> String {
    let digits = format!("{:.0}", rate);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The PostgreSQL server's version string.
async fn server_version(url: &str) -> BenchResult<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let (version,): (String,) = sqlx::query_as("SELECT version()")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(version)
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let settings = Settings::from_env();
    let filters: Vec<String> = std::env::args().skip(1).collect();

    let mut variants = vec![
        Variant::EnqueueReference,
        Variant::EnqueueGraphile,
        Variant::EnqueueApalis(EnqueueMode::InTransaction),
        Variant::EnqueueApalis(EnqueueMode::PushAfterCommit),
    ];
    // graphile_worker's defaults drain a backlog at about `c` jobs per second
    // (see graphile.rs): shown once, at concurrency 4, with an early cut-off.
    variants.push(Variant::DrainGraphile(4, Tuning::Defaults));
    for &c in &settings.concurrencies {
        variants.push(Variant::DrainGraphile(c, Tuning::Throughput));
        variants.push(Variant::DrainApalis(c, None));
    }
    // apalis with a larger fetch batch than its default 10, at concurrency 4.
    variants.push(Variant::DrainApalis(4, Some(100)));
    variants.retain(|v| filters.is_empty() || filters.iter().any(|f| v.key().contains(f.as_str())));

    let load_start = loadavg();
    let version = server_version(&settings.url).await?;
    let mut outcomes: Vec<Outcome> = variants
        .iter()
        .map(|&variant| Outcome {
            variant,
            samples: Vec::new(),
            errors: Vec::new(),
        })
        .collect();

    for round in 0..settings.rounds {
        let mut order: Vec<usize> = (0..outcomes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let variant = outcomes[i].variant;
            eprint!(
                "round {}/{} {:<22} ",
                round + 1,
                settings.rounds,
                variant.key()
            );
            match variant.run(&settings).await {
                Ok(sample) => {
                    let unit = if variant.is_drain() { "jobs/s" } else { "tx/s" };
                    let cut = if sample.timed_out {
                        " (TIMED OUT, partial)"
                    } else {
                        ""
                    };
                    eprintln!(
                        "{} {unit} ({} done){cut}",
                        fmt_rate(sample.rate),
                        sample.done
                    );
                    outcomes[i].samples.push(sample);
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    outcomes[i].errors.push(e.to_string());
                }
            }
        }
    }

    println!("# Peers on PostgreSQL: graphile_worker and apalis-postgres\n");
    println!("- Server: {version}");
    println!(
        "- Settings: {} enqueue transactions, {} drain jobs, {} rounds, concurrencies {:?}, drain timeout {} s (graphile_worker defaults: {} s), pool {} connections",
        settings.enqueue_jobs,
        settings.jobs,
        settings.rounds,
        settings.concurrencies,
        settings.drain_timeout.as_secs(),
        settings.paced_timeout.min(settings.drain_timeout).as_secs(),
        common::POOL_SIZE
    );
    println!("- Load average at start: {load_start}");
    println!("- Load average at end: {}\n", loadavg());

    let enqueue: Vec<_> = outcomes.iter().filter(|o| !o.variant.is_drain()).collect();
    if !enqueue.is_empty() {
        println!(
            "## Enqueue: one transaction per order ({} orders)\n",
            settings.enqueue_jobs
        );
        println!("| library | version | variant | tx/s (median) | rounds min–max | notes |");
        println!("| --- | --- | --- | ---: | ---: | --- |");
        for outcome in enqueue {
            println!("{}", outcome.row());
        }
        println!();
    }
    let drain: Vec<_> = outcomes.iter().filter(|o| o.variant.is_drain()).collect();
    if !drain.is_empty() {
        println!("## Drain: {} noop jobs\n", settings.jobs);
        println!("| library | version | variant | jobs/s (median) | rounds min–max | notes |");
        println!("| --- | --- | --- | ---: | ---: | --- |");
        for outcome in drain {
            println!("{}", outcome.row());
        }
        println!();
    }
    Ok(())
}
