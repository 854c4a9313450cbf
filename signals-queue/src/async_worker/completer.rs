//! The completer: completes the jobs whose handlers never opened their transaction, many to
//! one statement, flushed by count ([`FLUSH_JOBS`]) and by a short deadline ([`FLUSH_AFTER`]).
//! Until the flush commits the jobs stay `running` under the worker's lease; a crash before it
//! runs them again (at least once, as for any effect outside the database).

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::shared::Shared;
use crate::lifecycle::{FlushRetry, FLUSH_AFTER, FLUSH_JOBS};
use crate::outcome;
use crate::store;
use crate::trace;

/// The completer's loop, until every executor has gone (the channel closes); then flushes what
/// is left.
pub(super) async fn complete(shared: Arc<Shared>, mut completions: UnboundedReceiver<(i64, i64)>) {
    let mut batch: Vec<(i64, i64)> = Vec::with_capacity(FLUSH_JOBS);
    while let Some(first) = completions.recv().await {
        batch.push(first);
        let deadline = tokio::time::sleep(FLUSH_AFTER);
        tokio::pin!(deadline);
        while batch.len() < FLUSH_JOBS {
            tokio::select! {
                next = completions.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        flush(&shared, &mut batch).await;
    }
}

/// Completes `batch` in one statement, retrying while the database is unreachable; once the
/// worker is stopping, for one lease at most: the jobs stay `running` under a lease that is
/// no longer renewed after shutdown, and other workers rescue them (run again: at least once).
async fn flush(shared: &Shared, batch: &mut Vec<(i64, i64)>) {
    let mut retry = FlushRetry::default();
    loop {
        retry.closing(shared.stopping(), shared.config.timing.lease);
        let attempt = async {
            let mut conn = shared.own.acquire().await?;
            store::complete_many(conn.tx(), batch, shared.now()).await
        };
        // Once stopping, no try outlasts the give-up time (a pool waiting for a database that
        // is gone would).
        let result = match retry.deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), attempt)
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut)),
            None => attempt.await,
        };
        match result {
            Ok(handlers) => {
                let (counters, in_flight) = (&shared.counters, &shared.in_flight);
                outcome::flushed(counters, in_flight, batch, &handlers, &shared.jobs);
                batch.clear();
                return;
            }
            Err(error) => {
                // The jobs stay running under this worker's lease; a rescue takes them back if
                // the worker dies meanwhile, and the claim's token refuses a late flush then.
                trace::database_error("complete", &error.into());
                let Some(pause) = retry.again() else {
                    outcome::flush_abandoned(batch);
                    batch.clear();
                    return;
                };
                tokio::time::sleep(pause).await;
            }
        }
    }
}
