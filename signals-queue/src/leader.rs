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
//! What the leader does: fire periodic signals, prune finished jobs, publish the gauges of
//! jobs by state (a leader that stops leading zeroes what it published). What every worker does for itself: renew its own
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

/// How often the leader publishes the gauges of jobs by state and the oldest due job's age.
pub const GAUGES_EVERY: Duration = Duration::from_secs(10);

/// How often the leader starts a round of pruning.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What a round of pruning deletes, in order, a batch at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prune {
    /// Done jobs finished before this many milliseconds ago.
    Done(Millis),
    /// Dead, discarded and cancelled jobs.
    Dead(Millis),
    /// Periodic signals' ticks (each signal's latest is kept).
    Ticks(Millis),
}

/// The leader's pruning: a round every [`PRUNE_EVERY`], each kind of row a batch at a time
/// until a batch comes back short, so that other work (ticks) runs between batches.
#[derive(Debug)]
pub struct Pruner {
    retention: crate::timing::Retention,
    /// When the next round starts; `None`: at once.
    next: Option<Instant>,
    /// The round under way: its time (the database's) and what it deletes next.
    current: Option<(Millis, Prune)>,
    /// How long the last batch took: the pause before the next one, so that the writers of a
    /// SQLite file (one writer at a time) get the lock at least half of the time.
    pause: Duration,
}

impl Pruner {
    /// Prunes what `retention` says.
    pub fn new(retention: crate::timing::Retention) -> Pruner {
        Pruner {
            retention,
            next: None,
            current: None,
            pause: Duration::ZERO,
        }
    }

    /// The next batch to delete, if a round is under way or due (its cut-offs judged at
    /// `now`, the database's time, when it starts).
    pub fn next(&mut self, now: Millis) -> Option<Prune> {
        if self.current.is_none() && self.next.is_none_or(|next| Instant::now() >= next) {
            match self.after(now, None) {
                Some(first) => self.current = Some((now, first)),
                None => self.next = Some(Instant::now() + PRUNE_EVERY),
            }
        }
        self.current.map(|(_, prune)| prune)
    }

    /// A batch deleted `deleted` rows (of at most `batch`) in `took`: the same again while
    /// batches come back full, else the next kind; after the last, the next round waits.
    pub fn deleted(&mut self, deleted: u64, batch: u64, took: Duration) {
        let Some((at, prune)) = self.current else {
            return;
        };
        self.pause = took;
        if deleted >= batch {
            return;
        }
        self.current = self.after(at, Some(prune)).map(|next| (at, next));
        if self.current.is_none() {
            self.next = Some(Instant::now() + PRUNE_EVERY);
        }
    }

    /// A batch failed: the round starts over at the next one.
    pub fn failed(&mut self) {
        self.current = None;
        self.next = Some(Instant::now() + PRUNE_EVERY);
    }

    /// How long until the next batch: as long as the last one took while a round is under
    /// way, else until the next round.
    pub fn wait(&self) -> Duration {
        match (self.current, self.next) {
            (Some(_), _) => self.pause,
            (None, None) => Duration::ZERO,
            (None, Some(next)) => next.saturating_duration_since(Instant::now()),
        }
    }

    /// What a round at `at` deletes after `prune` (`None`: first), with its cut-off.
    fn after(&self, at: Millis, prune: Option<Prune>) -> Option<Prune> {
        let cut = |age: Option<Duration>| age.map(|age| at - age.as_millis() as Millis);
        let (done, dead) = (self.retention.done_after(), self.retention.dead_after());
        let order = [
            cut(done).map(Prune::Done),
            cut(dead).map(Prune::Dead),
            cut(done).map(Prune::Ticks),
        ];
        let start = match prune {
            None => 0,
            Some(Prune::Done(_)) => 1,
            Some(Prune::Dead(_)) => 2,
            Some(Prune::Ticks(_)) => 3,
        };
        order.into_iter().skip(start).flatten().next()
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

    #[test]
    fn a_round_of_pruning_deletes_each_kind_batch_by_batch_then_waits() {
        let day = 24 * 3600 * 1000;
        let mut pruner = Pruner::new(crate::timing::Retention::default());
        let now = 100 * day;
        assert_eq!(pruner.next(now), Some(Prune::Done(now - day)));
        pruner.deleted(10, 10, Duration::from_millis(7)); // a full batch: more of the same
        assert_eq!(pruner.next(now + 5), Some(Prune::Done(now - day)));
        assert_eq!(
            pruner.wait(),
            Duration::from_millis(7),
            "a pause as long as the batch"
        );
        pruner.deleted(3, 10, Duration::ZERO);
        assert_eq!(pruner.next(now + 5), Some(Prune::Dead(now - 14 * day)));
        pruner.deleted(0, 10, Duration::ZERO);
        assert_eq!(pruner.next(now + 5), Some(Prune::Ticks(now - day)));
        pruner.deleted(0, 10, Duration::ZERO);
        assert_eq!(pruner.next(now + 5), None, "the round is over");
        assert!(pruner.wait() > Duration::from_secs(50));
        let mut keep_all = Pruner::new(crate::timing::Retention::keep_all());
        assert_eq!(keep_all.next(now), None);
        let dead_only = crate::timing::Retention::default().done(None);
        let mut pruner = Pruner::new(dead_only);
        assert_eq!(pruner.next(now), Some(Prune::Dead(now - 14 * day)));
        pruner.deleted(0, 10, Duration::ZERO);
        assert_eq!(
            pruner.next(now),
            None,
            "ticks follow the done jobs' retention"
        );
    }
}
