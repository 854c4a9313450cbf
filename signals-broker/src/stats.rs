//! Counts of a subscriber's inbox, for dashboards and tests.

use signals_queue::__broker as queue;
use signals_queue::{Error, Pool};

/// Counts of one consumer's inbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Messages whose effects committed (each once).
    pub done: u64,
    /// Messages terminated after their last delivery, or that could not be read.
    pub dead: u64,
}

/// The inbox counts of `consumer` in `pool`'s database.
///
/// # Errors
///
/// A database error.
pub async fn inbox_stats(pool: &Pool, consumer: &str) -> Result<InboxStats, Error> {
    let mut conn = queue::acquire(pool).await?;
    let mut stats = InboxStats::default();
    for (state, count) in queue::inbox_counts(conn.tx(), consumer).await? {
        match state.as_str() {
            "done" => stats.done = count as u64,
            "dead" => stats.dead = count as u64,
            _ => {}
        }
    }
    Ok(stats)
}
