//! The inbox: one row per consumer and message id, written in the transaction of the message's
//! effects, so that a redelivery is recognised and skipped; and its pruning.

use std::time::{Duration, Instant};

use signals_queue::__broker as queue;
use signals_queue::Tx;

use crate::subscriber::settings::Settings;

/// How often a subscriber prunes its inbox.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Records a message in the inbox (`dead` with its error if `error` is given); whether it was
/// new.
pub(crate) async fn record(
    tx: Tx<'_>,
    consumer: &str,
    message_id: &str,
    subject: &str,
    error: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let state = if error.is_some() { "dead" } else { "done" };
    let row = queue::InboxRow {
        consumer,
        message_id,
        subject,
        state,
        error,
        now,
    };
    queue::inbox_insert(tx, &row).await
}

/// Forgets the consumer's inbox rows older than its retention, at most every
/// [`PRUNE_EVERY`]; `last` is when it last did.
pub(crate) async fn prune(settings: &Settings, last: &mut Option<Instant>) {
    if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    let before = settings.clock.now() - settings.inbox_retention.as_millis() as i64;
    let pruned = match queue::acquire(&settings.pool).await {
        Ok(mut conn) => queue::inbox_prune(conn.tx(), &settings.consumer, before).await,
        Err(error) => Err(error),
    };
    if let Err(error) = pruned {
        queue::database_error("inbox prune", &error.into());
    }
}
