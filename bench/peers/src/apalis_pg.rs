//! apalis with its PostgreSQL backend (`apalis-postgres`).
//!
//! - Enqueue: `PostgresStorage::push` (the `TaskSink` API) takes no transaction
//!   and commits on a pooled connection of its own, but the crate exports the
//!   statement it runs, `apalis_postgres::queries::push_tasks(conn, queue, tasks)`,
//!   which takes any executor (its README pushes on `&mut *tx` this way). The
//!   in-transaction variant uses it with the payload encoded as the storage's
//!   `JsonCodec` does (`serde_json::to_vec`); a second variant shows the plain
//!   `push` after the domain row's own commit (two transactions, not atomic).
//! - Drain: the backlog is written with `push_bulk` (1,000 jobs per call, not
//!   timed); then one worker built as the apalis README shows,
//!   `WorkerBuilder::new(..).backend(storage).concurrency(c).parallelize(tokio::spawn)`,
//!   with the storage's default `Config` (batch of 10 per fetch, tasks locked,
//!   results persisted) but an explicit queue name, is timed until the noop
//!   handler has run for every job. One more row uses `Config::batch_size(100)`:
//!   each fetch (`apalis.get_jobs`, one transaction) costs enough that the
//!   default batch of 10 bounds the drain rate.

use std::{sync::Arc, time::Instant};

use apalis::prelude::{
    BoxDynError, Data, ParallelizeExt, TaskBuilder, TaskSink, WorkerBuilder, WorkerBuilderExt,
    WorkerError,
};
use apalis_postgres::{Config, PostgresStorage};
use tokio::sync::Notify;

use crate::common::{
    check, create_orders_table, insert_order, BenchResult, FreshDb, OrderPlaced, Progress, Sample,
    Settings, STOP_TIMEOUT,
};

/// Exact versions of `apalis-postgres` and `apalis`, from Cargo.lock.
pub const VERSION: &str = concat!(
    env!("PEER_VERSION_APALIS_POSTGRES"),
    " (apalis ",
    env!("PEER_VERSION_APALIS"),
    ")"
);

/// Queue (`job_type`) of every job; a run has a database of its own.
const QUEUE: &str = "order_placed";

/// Jobs per `push_bulk` call when writing the backlog.
const BACKLOG_CHUNK: usize = 1_000;

/// How the enqueue section adds the job.
#[derive(Debug, Clone, Copy)]
pub enum EnqueueMode {
    /// `queries::push_tasks` on the caller's transaction, with the domain row.
    InTransaction,
    /// Domain row committed, then `PostgresStorage::push` in its own transaction.
    PushAfterCommit,
}

/// A storage on `pool` for [`QUEUE`], with the default `Config` otherwise
/// (or a fetch batch of `batch_size` jobs in place of the default 10).
fn storage(pool: &sqlx::PgPool, batch_size: Option<usize>) -> PostgresStorage<OrderPlaced> {
    let config = Config::default().queue(QUEUE);
    let config = match batch_size {
        Some(size) => config.batch_size(size),
        None => config,
    };
    PostgresStorage::new(pool).with_config(config)
}

/// Jobs in `apalis.jobs`, all of them or those whose status is not 'Done'.
async fn count_jobs(pool: &sqlx::PgPool, not_done: bool) -> BenchResult<usize> {
    let sql = if not_done {
        "SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'"
    } else {
        "SELECT count(*) FROM apalis.jobs"
    };
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await?;
    Ok(n as usize)
}

/// Enqueue: `n` orders, each a domain row plus a job, added as `mode` says.
pub async fn enqueue(settings: &Settings, mode: EnqueueMode) -> BenchResult<Sample> {
    let db = FreshDb::create(&settings.url, "apalis_enqueue").await?;
    let result = async {
        PostgresStorage::setup(&db.pool).await?;
        create_orders_table(&db.pool).await?;
        let mut storage = storage(&db.pool, None);

        let n = settings.enqueue_jobs;
        let started = Instant::now();
        for i in 1..=n as u64 {
            let order = OrderPlaced::new(i);
            let mut tx = db.pool.begin().await?;
            insert_order(&mut tx, &order).await?;
            match mode {
                EnqueueMode::InTransaction => {
                    let task = TaskBuilder::new(serde_json::to_vec(&order)?).build();
                    apalis_postgres::queries::push_tasks(&mut *tx, QUEUE, vec![task]).await?;
                    tx.commit().await?;
                }
                EnqueueMode::PushAfterCommit => {
                    tx.commit().await?;
                    storage
                        .push(order)
                        .await
                        .map_err(|e| format!("apalis push: {e:?}"))?;
                }
            }
        }
        let sample = Sample::new(n, started.elapsed(), false);

        let jobs = count_jobs(&db.pool, false).await?;
        check(jobs == n, || {
            format!("apalis enqueue: {jobs} jobs in the table, expected {n}")
        })?;
        Ok(sample)
    }
    .await;
    db.drop_db().await?;
    result
}

/// The noop handler: counts the run and returns.
async fn noop(_order: OrderPlaced, progress: Data<Arc<Progress>>) -> Result<(), BoxDynError> {
    progress.job_ran();
    Ok(())
}

/// Drain: a backlog of `settings.jobs` noop jobs, one worker with `concurrency`,
/// fetching `batch_size` jobs at a time (`None`: the default, 10).
pub async fn drain(
    settings: &Settings,
    concurrency: usize,
    batch_size: Option<usize>,
) -> BenchResult<Sample> {
    let db = FreshDb::create(&settings.url, "apalis_drain").await?;
    let result = async {
        PostgresStorage::setup(&db.pool).await?;
        let mut storage = storage(&db.pool, batch_size);
        let orders: Vec<_> = (1..=settings.jobs as u64).map(OrderPlaced::new).collect();
        for chunk in orders.chunks(BACKLOG_CHUNK) {
            storage
                .push_bulk(chunk.to_vec())
                .await
                .map_err(|e| format!("apalis push_bulk: {e:?}"))?;
        }
        let jobs = count_jobs(&db.pool, false).await?;
        check(jobs == settings.jobs, || {
            format!("apalis backlog: {jobs} jobs, expected {}", settings.jobs)
        })?;

        let progress = Progress::new(settings.jobs);
        let worker = WorkerBuilder::new(format!("bench-c{concurrency}"))
            .backend(storage)
            .concurrency(concurrency)
            .parallelize(tokio::spawn)
            .data(progress.clone())
            .build(noop);
        let stop = Arc::new(Notify::new());

        let started = Instant::now();
        let mut running = tokio::spawn({
            let stop = stop.clone();
            worker.run_until(async move {
                stop.notified().await;
                Ok::<(), WorkerError>(())
            })
        });
        let sample = progress.wait(started, settings.drain_timeout).await;

        stop.notify_one();
        match tokio::time::timeout(STOP_TIMEOUT, &mut running).await {
            Ok(joined) => joined?.map_err(|e| format!("apalis worker: {e}"))?,
            Err(_) => {
                eprintln!("  apalis: worker still running {STOP_TIMEOUT:?} after stop; aborted");
                running.abort();
            }
        }
        if !sample.timed_out {
            let runs = progress.done();
            check(runs == settings.jobs, || {
                format!(
                    "apalis drain: {runs} handler runs for {} jobs",
                    settings.jobs
                )
            })?;
            let left = count_jobs(&db.pool, true).await?;
            if left != 0 {
                // Completions are written back in batches; after a graceful stop all should be 'Done'.
                eprintln!("  apalis: {left} jobs not marked 'Done' after the worker stopped");
            }
        }
        Ok(sample)
    }
    .await;
    db.drop_db().await?;
    result
}
