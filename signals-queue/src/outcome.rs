//! What either worker does once the database has answered for a job: the counters, the trace,
//! and the jobs it no longer holds. The thread worker and the async worker (and the relay, for
//! its flushes) call these after their own statements, so the bookkeeping is written once.

use std::collections::HashMap;

use crate::error::AttemptError;
use crate::job::JobInfo;
use crate::lifecycle::{Claimed, Counters, Failure, InFlight, Verdict};
use crate::meter;
use crate::trace;

/// A failed attempt was recorded (`recorded`), or given up on (the claim no longer held the
/// job, or the write was refused for a lease: maintenance fails it then, as an orphan).
pub(crate) fn failed(
    counters: &Counters,
    job: &Claimed,
    info: &JobInfo,
    error: &AttemptError,
    failure: &Failure<'_>,
    recorded: bool,
) {
    match failure.verdict {
        Verdict::Snooze(after) => {
            Counters::add(&counters.snoozed, 1);
            meter::snoozed(info);
            trace::snoozed(job, info, error, after);
        }
        Verdict::Discard => {
            Counters::add(&counters.discarded, 1);
            meter::discarded(info);
            trace::discarded(job, info, error);
        }
        Verdict::Fail => {
            Counters::add(&counters.failed, 1);
            let dead = failure.permanent || job.attempt >= info.max_attempts();
            if recorded {
                meter::failed(info, dead);
            }
            trace::failed(job, info, error, recorded, dead);
        }
    }
}

/// A batch of the leader's pruning came back after `took`: the rows it deleted, or the
/// database's error (logged; the round starts over at the next one).
pub(crate) fn pruned<E: Into<crate::error::Error>>(
    pruner: &mut crate::leader::Pruner,
    batch: Result<u64, E>,
    took: std::time::Duration,
) {
    match batch {
        Ok(deleted) => pruner.deleted(deleted, crate::sqlite_sql::PURGE_BATCH, took),
        Err(error) => {
            trace::database_error("retention", &error.into());
            pruner.failed();
        }
    }
}

/// A job was completed in the transaction its handler wrote in.
pub(crate) fn completed_in_transaction(counters: &Counters, info: &JobInfo) {
    Counters::add(&counters.completed_with_writes, 1);
    meter::succeeded(info, 1);
}

/// A flush of `batch` committed, completing the jobs of `handlers` (one name per job; the
/// others' claims no longer held them). `jobs`: the worker's handlers by name.
pub(crate) fn flushed(
    counters: &Counters,
    in_flight: &InFlight,
    batch: &[(i64, i64)],
    handlers: &[String],
    jobs: &HashMap<&'static str, &'static JobInfo>,
) {
    let completed = handlers.len();
    Counters::add(&counters.flushes, 1);
    Counters::add(&counters.completed_in_batches, completed as u64);
    for handler in handlers {
        if let Some(info) = jobs.get(handler.as_str()) {
            meter::succeeded(info, 1);
        }
    }
    if completed < batch.len() {
        trace::leases_lost(batch.len() - completed);
    }
    for (id, _) in batch {
        in_flight.release(*id);
    }
}

/// A flush given up at shutdown: its jobs stay `running` under a lease no longer renewed, and
/// a rescue runs them again.
pub(crate) fn flush_abandoned(batch: &[(i64, i64)]) {
    trace::leases_lost(batch.len());
}
