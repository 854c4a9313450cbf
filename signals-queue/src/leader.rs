//! The fleet's leader: one worker per database (and schema) that does what must happen once
//! per fleet, on a lease of its own; no I/O.
//!
//! Every worker tries to take or renew the leadership every [`LEADER_RENEW`] with one
//! conditional upsert of the single row of `signals_leader`: it succeeds when the row names this
//! worker already or its lease has lapsed by the database's clock (PostgreSQL's; on SQLite the
//! caller's). A leader holds it for [`LEADER_LEASE`] from before the statement was sent, and
//! stops leading the moment that has passed without a renewal, even while the database cannot
//! answer, so two leaders overlap only if a clock runs more than the lease fast; a leader that
//! dies is replaced within a lease. A leader that shuts down gives the row up at once.
//!
//! A session advisory lock would be simpler, but it belongs to a connection: a transaction-mode
//! pooler (PgBouncer) hands connections to other clients between transactions, and the lock
//! would outlive the leader or vanish under it.
//!
//! What the leader does: fire periodic signals. What every worker does for itself: renew its own
//! lease, make its own handlers' scheduled jobs available once due and rescue the jobs of dead
//! workers; those follow each worker's handlers (and a fleet in a rolling deploy runs two sets of
//! them), and are idempotent, so doing them per worker costs a statement and needs no leader.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::Millis;
use crate::error::lock;

/// How long a leader's lease lasts: the longest a fleet goes without a leader after its leader
/// died (a leader that shuts down hands over at once).
pub const LEADER_LEASE: Duration = Duration::from_secs(5);

/// How often every worker renews (or tries to take) the leadership.
pub const LEADER_RENEW: Duration = Duration::from_secs(1);

/// Whether this worker leads, as far as it knows: until when its lease surely holds, and the
/// database's time at its last renewal.
#[derive(Debug, Default)]
pub struct Leadership {
    until: Mutex<Option<Instant>>,
    clock: Mutex<Option<(Millis, Instant)>>,
    /// Bumped each time this worker becomes the leader.
    terms: std::sync::atomic::AtomicU64,
}

impl Leadership {
    /// The database answered, at its time `now`, that this worker holds the lease for `lease`
    /// from `sent` (when the statement was sent); whether it just became the leader.
    pub fn held(&self, sent: Instant, lease: Duration, now: Millis) -> bool {
        let mut until = lock(&self.until);
        let was = until.is_some_and(|until| Instant::now() < until);
        *until = Some(sent + lease);
        *lock(&self.clock) = Some((now, sent));
        if !was {
            self.terms.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        !was
    }

    /// The database's time now, from its time at the last renewal (PostgreSQL's clock
    /// decides ticks; on SQLite the leader's own).
    pub fn now(&self) -> Option<Millis> {
        lock(&self.clock).map(|(at, sent)| at + sent.elapsed().as_millis() as Millis)
    }

    /// How many times this worker became the leader: a change means another worker may have
    /// led in between.
    pub fn term(&self) -> u64 {
        self.terms.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The database answered that another worker leads (or this one resigned); whether this
    /// worker was the leader until now.
    pub fn lost(&self) -> bool {
        let mut until = lock(&self.until);
        let was = until.is_some_and(|until| Instant::now() < until);
        *until = None;
        was
    }

    /// Whether this worker leads now: its last renewal's lease has not run out.
    pub fn is_leader(&self) -> bool {
        lock(&self.until).is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_leads_until_its_lease_runs_out_without_a_renewal() {
        let leadership = Leadership::default();
        assert!(!leadership.is_leader());
        let lease = Duration::from_millis(50);
        assert!(
            leadership.held(Instant::now(), lease, 1_000),
            "newly elected"
        );
        assert!(leadership.is_leader());
        assert_eq!(leadership.term(), 1);
        assert!(!leadership.held(Instant::now(), lease, 1_010), "renewed");
        assert!(leadership.now().is_some_and(|now| now >= 1_010));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !leadership.is_leader(),
            "no renewal within the lease: not the leader"
        );
        assert!(
            leadership.held(Instant::now(), LEADER_LEASE, 2_000),
            "elected again"
        );
        assert_eq!(leadership.term(), 2);
        assert!(leadership.lost());
        assert!(!leadership.is_leader());
        assert!(!leadership.lost(), "lost once");
    }
}
