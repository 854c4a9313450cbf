//! The executor: one job, in a task of its own. The handler gets a lazy transaction and a
//! timeout; a handler that opened its transaction completes the job in it, one that did not
//! hands the job to the completer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

use super::shared::Shared;
use crate::db::{JobTx, Transaction, Tx};
use crate::error::AttemptError;
use crate::job::JobInfo;
use crate::lifecycle::{self, Claimed, Persist};
use crate::meter;
use crate::outcome;
use crate::scope::AsyncJobScope;
use crate::store;
use crate::trace;

/// Runs `job` and records its outcome.
pub(super) async fn execute(
    shared: Arc<Shared>,
    job: Claimed,
    info: &'static JobInfo,
    done: UnboundedSender<(i64, i64)>,
) {
    let span = trace::attempt(&job, info);
    trace::instrument(run(&shared, &job, info, &done), span).await;
}

async fn run(shared: &Shared, job: &Claimed, info: &JobInfo, done: &UnboundedSender<(i64, i64)>) {
    let (mut job_tx, open_failed) = JobTx::new(shared.config.pool.clone());
    let timeout = lifecycle::attempt_timeout(info.timeout(), &shared.config.timing);
    let started = Instant::now();
    meter::started(job, info, shared.config.timing.clock.now());
    let outcome = attempt(shared, job, info, &mut job_tx, open_failed, timeout).await;
    meter::ran(info, started.elapsed());
    match (outcome, job_tx.take()) {
        (Ok(()), None) => {
            // Nothing to commit with it: the completer completes it with others.
            if done.send((job.id, job.token)).is_err() {
                trace::lease_lost(job);
            }
        }
        (Ok(()), Some(tx)) => {
            match complete_in(shared, job, tx).await {
                Ok(true) => outcome::completed_in_transaction(&shared.counters, info),
                Ok(false) => trace::lease_lost(job),
                Err(error) => record_failure(shared, info, job, &error.into()).await,
            }
            shared.in_flight.release(job.id);
        }
        (Err(error), tx) => {
            drop(tx); // rolls back the handler's writes
            record_failure(shared, info, job, &error).await;
            shared.in_flight.release(job.id);
        }
    }
}

/// The handler, under its timeout; a transaction that could not be opened fails it too (its
/// future is dropped where it waited for the connection).
async fn attempt(
    shared: &Shared,
    job: &Claimed,
    info: &JobInfo,
    job_tx: &mut JobTx,
    open_failed: tokio::sync::oneshot::Receiver<sqlx::Error>,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let scope = AsyncJobScope {
        tx: Tx::__Job(job_tx),
        state: &shared.config.state,
        job_id: job.id,
        event_id: Uuid::parse_str(&job.event_id).unwrap_or_default(),
        attempt: job.attempt,
    };
    let handler = AssertUnwindSafe(info.run_async(&job.payload, scope)).catch_unwind();
    tokio::select! {
        result = tokio::time::timeout(timeout, handler) => match result {
            Err(_) => Err(AttemptError::TimedOut(timeout)),
            Ok(Err(panic)) => Err(AttemptError::panic(&*panic)),
            Ok(Ok(result)) => result,
        },
        Ok(error) = open_failed => Err(AttemptError::Sqlx(error)),
    }
}

/// Completes the job in the transaction its handler wrote in, and commits both: `false` if the
/// claim no longer held the job (then nothing commits).
async fn complete_in(
    shared: &Shared,
    job: &Claimed,
    mut tx: Transaction,
) -> Result<bool, sqlx::Error> {
    if !store::complete(tx.tx(), job, shared.now()).await? {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Records a failed attempt on the worker's own connections (retried while the database is
/// unreachable): pending again after a backoff, or dead.
pub(super) async fn record_failure(
    shared: &Shared,
    info: &JobInfo,
    job: &Claimed,
    error: &AttemptError,
) {
    let message = error.to_string();
    let failure = lifecycle::failure(job, error, &message, &shared.config.timing);
    // Tried again, whatever the error, until the lease would lapse; then the job is left
    // to maintenance, which fails it once nothing holds it (an orphan).
    let mut persist = Persist::for_lease(shared.config.timing.lease);
    let recorded = loop {
        let result = match shared.own.acquire().await {
            Ok(mut conn) => store::fail(conn.tx(), job, &failure).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(recorded) => break recorded,
            Err(error) => {
                trace::database_error("fail", &error.into());
                match persist.again() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => break false,
                }
            }
        }
    };
    outcome::failed(&shared.counters, job, info, error, &failure, recorded);
}
