//! The claims a relay holds in hand, and the reconcile its maintenance runs: a row still
//! `running` under the relay whose claim it no longer holds (the relay gave up writing its
//! completion or failure) is failed the normal way, its attempt charged, so that a write the
//! database always refuses cannot leave the message running, nor loop without end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use signals_queue::__broker::{self as queue, JobFailure};
use signals_queue::{Clock, Pool, RetryPolicy};
use tokio::sync::Notify;

/// The error a reconciled row records.
const ABANDONED: &str = "the relay could not record the outcome of publishing it before its \
    lease would lapse (if it was published, the stream drops the republished message by its id)";

/// The tokens of the claims a relay holds in hand: from before the claim statement is sent
/// until the outcome of every job it took has been written, or given up.
#[derive(Default)]
pub(crate) struct InFlight {
    tokens: Mutex<HashSet<i64>>,
}

impl InFlight {
    /// Holds `token` (before the claim that writes it is sent).
    pub(crate) fn hold(&self, token: i64) {
        self.lock().insert(token);
    }

    /// Lets `token` go: its jobs are recorded, or left to the reconcile.
    pub(crate) fn release(&self, token: i64) {
        self.lock().remove(&token);
    }

    fn holds(&self, token: i64) -> bool {
        self.lock().contains(&token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the reconcile needs of its relay.
pub(crate) struct Reconcile<'a> {
    pub(crate) pool: &'a Pool,
    /// The relay's worker id: the rows it claimed carry it.
    pub(crate) worker: i64,
    pub(crate) in_flight: &'a InFlight,
    /// The backoff a failed row waits out.
    pub(crate) retry: &'a RetryPolicy,
    /// The relay's `max_age`, in milliseconds.
    pub(crate) dead_after_ms: Option<i64>,
    pub(crate) clock: &'a Clock,
}

impl Reconcile<'_> {
    /// Reconciles every `tick` until `retire` is set (and `retired` notified).
    pub(crate) async fn until_retired(
        &self,
        tick: Duration,
        retire: &AtomicBool,
        retired: &Notify,
    ) {
        while !retire.load(Ordering::SeqCst) {
            let woken = retired.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Err(error) = self.once().await {
                queue::database_error("reconcile", &error.into());
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = &mut woken => {}
            }
        }
    }

    /// Fails the relay's running rows whose claim is no longer in hand; how many.
    pub(crate) async fn once(&self) -> Result<u64, sqlx::Error> {
        let mut conn = queue::acquire(self.pool).await?;
        // The rows first, then the tokens: a claim is held before it is sent, so a row read
        // here whose token is not held now was let go by the relay, never claimed after.
        let running = queue::running_of(conn.tx(), self.worker).await?;
        let failures: Vec<JobFailure<'_>> = running
            .into_iter()
            .filter(|&(_, token, _)| !self.in_flight.holds(token))
            .map(|(id, token, attempt)| JobFailure {
                id,
                token,
                delay_ms: queue::retry_delay(self.retry, attempt.max(0) as u32),
                error: ABANDONED,
            })
            .collect();
        let now = queue::fixed_now(self.clock);
        queue::fail_many(conn.tx(), &failures, self.dead_after_ms, now).await
    }
}
