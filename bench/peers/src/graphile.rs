//! graphile_worker (the Rust port of graphile-worker) on PostgreSQL.
//!
//! - Enqueue: `WorkerUtils::with_executor(&mut tx).add_job(..)` runs the
//!   library's SQL function `graphile_worker.add_job(..)` on the caller's
//!   transaction, so the domain row and the job commit together.
//! - Drain: the backlog is written with `WorkerUtils::add_jobs` (one batch
//!   statement per 1,000 jobs, not timed); then `Worker::run` with
//!   `concurrency(c)` is timed until the noop handler has run for every job,
//!   with one of two configurations ([`Tuning`]):
//!   - `Defaults`: nothing else set (LISTEN/NOTIFY on, 1 s poll interval, no
//!     local queue, no completion batching). In this mode each of the `c` job
//!     slots runs ONE job per wake-up signal (a poll tick or a `jobs:insert`
//!     notification; `runner/job_loop/direct.rs` calls `process_one_job` once
//!     per signal) and does not look for the next job when it finishes, so a
//!     backlog that was there before the worker started drains at about `c`
//!     jobs per poll interval. It is measured at concurrency 4 only, cut off
//!     early (see `PACED_TIMEOUT_SECS`), and reported with its partial rate.
//!   - `Throughput`: the "Throughput-oriented worker" settings of the crate's
//!     own guide (docs/src/configuration/worker-options.md): 500 ms poll
//!     interval, completion and failure batching after 5 ms, a local queue of
//!     100 jobs with a 60 s TTL.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use graphile_worker::{
    IntoTaskHandlerResult, JobSpec, LocalQueueConfig, TaskHandler, WorkerContext, WorkerOptions,
    WorkerUtils,
};

use crate::common::{
    check, create_orders_table, insert_order, BenchResult, FreshDb, OrderPlaced, Progress, Sample,
    Settings, STOP_TIMEOUT,
};

/// Exact version of the crate, from Cargo.lock.
pub const VERSION: &str = env!("PEER_VERSION_GRAPHILE_WORKER");

/// The library's default schema (every run has a database of its own, so it is
/// free); the sanity checks count its `_private_jobs` table.
const SCHEMA: &str = "graphile_worker";

/// Jobs per `add_jobs` call when writing the backlog.
const BACKLOG_CHUNK: usize = 1_000;

/// How the drain's worker is configured besides its concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// The library's defaults.
    Defaults,
    /// The crate guide's "Throughput-oriented worker" settings.
    Throughput,
}

impl Tuning {
    /// Applies this configuration to `options`.
    fn apply(self, options: WorkerOptions) -> WorkerOptions {
        match self {
            Self::Defaults => options,
            Self::Throughput => options
                .poll_interval(Duration::from_millis(500))
                .complete_job_batch_delay(Duration::from_millis(5))
                .fail_job_batch_delay(Duration::from_millis(5))
                .local_queue(
                    LocalQueueConfig::default()
                        .with_size(100)
                        .with_ttl(Duration::from_secs(60)),
                ),
        }
    }
}

impl TaskHandler for OrderPlaced {
    const IDENTIFIER: &'static str = "order_placed";

    /// The noop handler: counts the run and returns.
    async fn run(self, ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        ctx.get_ext::<Arc<Progress>>()
            .expect("Progress extension")
            .job_ran();
    }
}

/// Enqueue: `n` transactions of `BEGIN; INSERT INTO orders ..; add_job(..); COMMIT`.
pub async fn enqueue(settings: &Settings) -> BenchResult<Sample> {
    let db = FreshDb::create(&settings.url, "gw_enqueue").await?;
    let result = async {
        let utils = WorkerUtils::new(db.pool.clone(), SCHEMA);
        utils.migrate().await?;
        create_orders_table(&db.pool).await?;

        let n = settings.enqueue_jobs;
        let started = Instant::now();
        for i in 1..=n as u64 {
            let order = OrderPlaced::new(i);
            let mut tx = db.pool.begin().await?;
            insert_order(&mut tx, &order).await?;
            utils
                .clone()
                .with_executor(&mut tx)
                .add_job(order, JobSpec::default())
                .await?;
            tx.commit().await?;
        }
        let sample = Sample::new(n, started.elapsed(), false);

        let (jobs,): (i64,) = sqlx::query_as("SELECT count(*) FROM graphile_worker._private_jobs")
            .fetch_one(&db.pool)
            .await?;
        check(jobs as usize == n, || {
            format!("graphile_worker enqueue: {jobs} jobs in the table, expected {n}")
        })?;
        Ok(sample)
    }
    .await;
    db.drop_db().await?;
    result
}

/// Drain: a backlog of `settings.jobs` noop jobs, one worker with `concurrency`
/// configured as `tuning` says, cut off after `timeout`.
pub async fn drain(
    settings: &Settings,
    concurrency: usize,
    tuning: Tuning,
    timeout: Duration,
) -> BenchResult<Sample> {
    let db = FreshDb::create(&settings.url, "gw_drain").await?;
    let result = async {
        let progress = Progress::new(settings.jobs);
        // `init` runs the migrations; the worker does not start before `run`.
        let options = tuning.apply(WorkerOptions::default());
        let worker = options
            .pg_pool(db.pool.clone())
            .schema(SCHEMA)
            .concurrency(concurrency)
            .define_job::<OrderPlaced>()
            .add_extension(progress.clone())
            .listen_os_shutdown_signals(false)
            .init()
            .await?;

        let utils = worker.create_utils();
        let spec = JobSpec::default();
        let orders: Vec<_> = (1..=settings.jobs as u64).map(|i| (OrderPlaced::new(i), &spec)).collect();
        for chunk in orders.chunks(BACKLOG_CHUNK) {
            utils.add_jobs(chunk).await?;
        }

        let worker = Arc::new(worker);
        let started = Instant::now();
        let mut running = tokio::spawn({
            let worker = worker.clone();
            async move { worker.run().await }
        });
        let sample = progress.wait(started, timeout).await;

        worker.request_shutdown();
        match tokio::time::timeout(STOP_TIMEOUT, &mut running).await {
            Ok(joined) => joined?.map_err(|e| format!("graphile_worker run: {e}"))?,
            Err(_) => {
                eprintln!("  graphile_worker: worker still running {STOP_TIMEOUT:?} after request_shutdown; aborted");
                running.abort();
            }
        }
        if !sample.timed_out {
            let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM graphile_worker._private_jobs")
                .fetch_one(&db.pool)
                .await?;
            check(left == 0, || format!("graphile_worker drain: {left} jobs left in the table"))?;
            let runs = progress.done();
            check(runs == settings.jobs, || format!("graphile_worker drain: {runs} handler runs for {} jobs", settings.jobs))?;
        }
        Ok(sample)
    }
    .await;
    db.drop_db().await?;
    result
}
