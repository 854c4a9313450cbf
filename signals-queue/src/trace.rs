//! `tracing` spans and events for job attempts, whatever the features: a failed attempt, a dead
//! job, a lost lease and a database error are logged as soon as the application installs a
//! subscriber (and cost a check of an atomic when it installs none).

use crate::error::{AttemptError, Error};
use crate::job::JobInfo;
use crate::lifecycle::Claimed;

/// The span of one attempt: the job, its handler and its attempt number.
pub(crate) fn attempt(job: &Claimed, info: &JobInfo) -> tracing::Span {
    tracing::info_span!(
        "job",
        id = job.id,
        handler = info.name(),
        attempt = job.attempt,
        event_id = %job.event_id,
    )
}

pub(crate) fn failed(
    job: &Claimed,
    info: &JobInfo,
    error: &AttemptError,
    recorded: bool,
    dead: bool,
) {
    let (id, handler) = (job.id, info.name());
    match (recorded, dead) {
        (false, _) => {
            tracing::warn!(id, handler, %error, "job failed; its lease was lost, so another worker retries it")
        }
        (true, true) => {
            tracing::error!(id, handler, %error, attempt = job.attempt, "job is dead")
        }
        (true, false) => {
            tracing::warn!(id, handler, %error, attempt = job.attempt, "job failed; it will be retried")
        }
    }
}

/// `future`, run inside `span`.
#[cfg(feature = "async")]
pub(crate) async fn instrument<F: std::future::Future>(
    future: F,
    span: tracing::Span,
) -> F::Output {
    tracing::Instrument::instrument(future, span).await
}

pub(crate) fn lease_lost(job: &Claimed) {
    tracing::warn!(
        id = job.id,
        "job's lease was lost before it completed; rolled back"
    );
}

pub(crate) fn rescued(count: usize) {
    tracing::warn!(
        count,
        "returned the jobs of workers whose lease lapsed to the queue"
    );
}

pub(crate) fn leases_lost(count: usize) {
    tracing::warn!(
        count,
        "completed jobs had been rescued meanwhile; they run again"
    );
}

#[cfg(feature = "sqlite")]
pub(crate) fn hung(job: &Claimed, timeout: std::time::Duration) {
    tracing::error!(
        id = job.id,
        ?timeout,
        "a handler thread is past its timeout and cannot be stopped; its job was failed and its late commit will be refused"
    );
}

/// A handler asked for its job to be tried again later.
pub(crate) fn snoozed(
    job: &Claimed,
    info: &JobInfo,
    error: &AttemptError,
    after: std::time::Duration,
) {
    tracing::info!(id = job.id, handler = info.name(), ?after, %error, "job snoozed");
}

/// A handler discarded its job.
pub(crate) fn discarded(job: &Claimed, info: &JobInfo, error: &AttemptError) {
    tracing::warn!(id = job.id, handler = info.name(), %error, "job discarded");
}

/// Messages of this program's publishing functions wait in the outbox longer than they should
/// if a relay were running.
#[cfg(feature = "async")]
pub(crate) fn outbox_waiting(count: i64, oldest: std::time::Duration) {
    tracing::warn!(
        count,
        ?oldest,
        "messages have waited in the outbox for longer than two leases: is a relay (signals-broker) running for this database?"
    );
}

/// A running job an operator cancelled was dropped.
pub(crate) fn cancelled(id: i64) {
    tracing::warn!(id, "job cancelled by an operator; its attempt was dropped");
}

pub(crate) fn database_error(during: &str, error: &Error) {
    tracing::warn!(during, %error, "queue database error; retrying");
}

/// This worker became the fleet's leader, or stopped being it.
pub(crate) fn leadership(worker: i64, leads: bool) {
    match leads {
        true => tracing::info!(
            worker,
            "this worker leads the fleet: it fires periodic signals"
        ),
        false => tracing::info!(worker, "this worker no longer leads the fleet"),
    }
}

/// A periodic signal's tick was fired.
pub(crate) fn ticked(signal: &str, tick: crate::clock::Millis) {
    tracing::debug!(signal, tick, "periodic signal fired");
}

/// A periodic signal's tick failed: its transaction rolled back, and the next round tries it
/// again.
pub(crate) fn tick_failed(signal: &str, tick: crate::clock::Millis, error: &dyn std::fmt::Display) {
    tracing::error!(signal, tick, %error, "periodic signal failed; it is fired again");
}

/// Announcing a dead job failed (a `JobDead` handler's error, or the database's): its
/// transaction rolled back, and the next round tries again.
pub(crate) fn announce_failed(error: &dyn std::fmt::Display) {
    tracing::error!(%error, "announcing a dead job failed; it is announced again");
}

/// A worker was given a limit for a queue none of its linked handlers runs in.
pub(crate) fn no_handler_in_queue(queue: &str) {
    tracing::warn!(
        queue,
        "no queued handler linked into this program runs in this queue: its limit does nothing"
    );
}
