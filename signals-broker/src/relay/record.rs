//! Recording what a batch's publishing did: the acked messages' jobs completed in one
//! statement, the others' failed attempts in one statement; a write the database fails is
//! written again with a backoff until the relay's lease would lapse, then left to the queue's
//! maintenance, which fails the rows the relay let go of (orphans) the normal way.

use std::time::{Duration, Instant};

use signals_queue::__broker::{self as queue, JobFailure};
use signals_queue::{Clock, Pool};

/// What publishing a batch did, to be written.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The acked messages' jobs: (id, token).
    pub(crate) done: Vec<(i64, i64)>,
    /// The others: (id, token, backoff in ms, error).
    pub(crate) failed: Vec<(i64, i64, i64, String)>,
}

/// Where and until when the outcome is written.
pub(crate) struct Recorder<'a> {
    pub(crate) pool: &'a Pool,
    pub(crate) clock: &'a Clock,
    /// The relay's `max_age`, in milliseconds.
    pub(crate) dead_after_ms: Option<i64>,
    /// Give up once past this: the relay's lease may have lapsed, and the rows may be another
    /// relay's by now (their writes are guarded by the claim's token anyway).
    pub(crate) deadline: Instant,
}

impl Recorder<'_> {
    /// Writes `outcome`: the completions, then the failures, each until it is written or the
    /// deadline passes; whether both were written.
    pub(crate) async fn record(&self, outcome: &Outcome) -> bool {
        let completed = outcome.done.is_empty()
            || self
                .until_written("complete", || async {
                    let mut conn = queue::acquire(self.pool).await?;
                    let now = queue::fixed_now(self.clock);
                    queue::complete_many(conn.tx(), &outcome.done, now).await?;
                    Ok(())
                })
                .await;
        let failures: Vec<JobFailure<'_>> = outcome
            .failed
            .iter()
            .map(|(id, token, delay_ms, error)| JobFailure {
                id: *id,
                token: *token,
                delay_ms: *delay_ms,
                error,
            })
            .collect();
        let failed = failures.is_empty()
            || self
                .until_written("fail", || async {
                    let mut conn = queue::acquire(self.pool).await?;
                    let now = queue::fixed_now(self.clock);
                    queue::fail_many(conn.tx(), &failures, self.dead_after_ms, now).await?;
                    Ok(())
                })
                .await;
        completed && failed
    }

    /// Runs `write` until it succeeds (`true`) or the deadline passes (`false`), with a
    /// backoff from 10 ms doubling to 1 s.
    async fn until_written<F, Fut>(&self, what: &str, mut write: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
    {
        let mut pause = Duration::from_millis(10);
        loop {
            let error = match write().await {
                Ok(()) => return true,
                Err(error) => error,
            };
            queue::database_error(what, &error.into());
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}
