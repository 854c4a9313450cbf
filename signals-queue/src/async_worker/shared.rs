//! What the async worker's tasks share: its settings, its connections, its counters and the
//! signals between its tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::maintenance::Upkeep;
use crate::db::Pool;
use crate::job::JobInfo;
use crate::lifecycle::{Claimed, Counters, InFlight, LeaseClock};
use crate::registry::Claimable;
use crate::scope::State;
use crate::timing::Timing;

/// A built worker's settings.
pub(super) struct Config {
    /// The pool handlers' transactions are begun on.
    pub(super) pool: Pool,
    /// What contexts reach with `AsyncJobScope::state`.
    pub(super) state: State,
    /// How many claimed jobs may wait for a slot while jobs are short.
    pub(super) fetch_ahead: usize,
    pub(super) timing: Timing,
    /// How long the leader keeps finished jobs.
    pub(super) retention: crate::timing::Retention,
}

/// What the worker's tasks share.
pub(super) struct Shared {
    pub(super) config: Config,
    /// LISTEN on PostgreSQL.
    pub(super) listens: bool,
    /// The worker's own connections (fetches, completions, leases, LISTEN).
    pub(super) own: Pool,
    pub(super) jobs: HashMap<&'static str, &'static JobInfo>,
    /// The linked handlers as the statements take them (see `LinkedJobs`).
    pub(super) handlers: String,
    /// The handlers claims take: the linked ones less those of paused queues.
    pub(super) claimable: Claimable,
    /// Each lane's producer's state, by the lane's index in `claimable`.
    pub(super) lanes: Vec<LaneState>,
    /// The lane whose producer runs suspects (the first with handlers).
    pub(super) suspect_lane: usize,
    /// A suspect runs (in `suspect_lane`): no other lane starts a job.
    pub(super) solo: AtomicBool,
    /// How to drop a running job an operator cancelled, by job id.
    pub(super) aborts: std::sync::Mutex<HashMap<i64, tokio::task::AbortHandle>>,
    /// An operator cancelled jobs (PostgreSQL's notification): maintenance looks at once.
    pub(super) cancelled: Notify,
    /// The publishing functions linked into this program (a JSON array; `None` if none):
    /// maintenance warns when their messages wait with no relay emptying the outbox.
    pub(super) outbox: Option<String>,
    /// This worker's id: its lease row's key.
    pub(super) worker: i64,
    /// Stop fetching (shutdown began).
    pub(super) stop: AtomicBool,
    pub(super) stopped: Notify,
    /// Stop renewing the lease (everything else has stopped).
    pub(super) retire: AtomicBool,
    pub(super) retired: Notify,
    /// Wakes the producer: a notification from PostgreSQL, rescued jobs, a due suspect.
    pub(super) woken: Notify,
    /// This worker holds a due suspect's reservation: the producer runs it alone.
    pub(super) suspects: AtomicBool,
    /// How many jobs the worker holds, running or fetched ahead, in every lane (the producers
    /// keep it).
    pub(super) running: AtomicUsize,
    /// How long shutdown waits for running handlers.
    pub(super) grace_ms: AtomicU64,
    pub(super) counters: Counters,
    /// The jobs claimed whose outcome is not recorded yet (maintenance records the rest).
    pub(super) in_flight: InFlight,
    /// When the lease was last renewed: no claim once it may have lapsed.
    pub(super) renewed: LeaseClock,
    /// Whether this worker leads the fleet.
    pub(super) leadership: crate::leader::Leadership,
    /// The asynchronous periodic signals linked into this program: how to fire each (in the
    /// order of the worker's `Ticker`).
    pub(super) fires: Vec<crate::periodic::AsyncFire>,
    /// Notified when this worker becomes the leader.
    pub(super) elected: Notify,
}

/// What one lane's producer shares with the rest of the worker.
#[derive(Default)]
pub(super) struct LaneState {
    /// Jobs fetched ahead, claimed, waiting for a slot (the producer starts them in order).
    pub(super) waiting: std::sync::Mutex<std::collections::VecDeque<Claimed>>,
    /// How many jobs the lane holds, running or waiting.
    pub(super) held: AtomicUsize,
    /// Wakes the lane's producer (with more than one lane, `Shared::woken` is passed on to
    /// every lane's).
    pub(super) woken: Notify,
}

impl Shared {
    /// What wakes `lane`'s producer: the worker's own `woken` when it has one lane.
    pub(super) fn woken(&self, lane: usize) -> &Notify {
        match self.lanes.len() {
            1 => &self.woken,
            _ => &self.lanes[lane].woken,
        }
    }

    /// Passes each wake-up of `woken` on to every lane's producer, until the worker stops
    /// (only with more than one lane).
    pub(super) async fn wake_lanes(&self) {
        while !self.stopping() {
            let stopped = self.stopped.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if self.stopping() {
                return;
            }
            tokio::select! {
                () = self.woken.notified() => {
                    for lane in &self.lanes {
                        lane.woken.notify_one();
                    }
                }
                () = stopped => return,
            }
        }
    }

    /// Jobs held in lanes other than `lane`.
    pub(super) fn held_elsewhere(&self, lane: usize) -> usize {
        let held = |(i, state): (usize, &LaneState)| match i == lane {
            true => 0,
            false => state.held.load(Ordering::SeqCst),
        };
        self.lanes.iter().enumerate().map(held).sum()
    }

    /// Records that `lane` holds `held` jobs, and the worker's total.
    pub(super) fn hold(&self, lane: usize, held: usize) {
        self.lanes[lane].held.store(held, Ordering::SeqCst);
        self.running
            .store(held + self.held_elsewhere(lane), Ordering::SeqCst);
    }

    /// What the leader task needs.
    pub(super) fn leading(&self) -> super::leader::Leading<'_> {
        super::leader::Leading {
            own: &self.own,
            pool: &self.config.pool,
            worker: self.worker,
            state: &self.config.state,
            clock: &self.config.timing.clock,
            leadership: &self.leadership,
            fires: &self.fires,
            stop: &self.stop,
            stopped: &self.stopped,
            elected: &self.elected,
            retention: self.config.retention,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The time statements bind: `None` unless a test gave a manual clock.
    pub(super) fn now(&self) -> Option<crate::clock::Millis> {
        self.config.timing.clock.fixed()
    }

    /// Drops the running jobs `ids` (their claims were revoked by a cancellation): their
    /// futures are dropped where they wait, their transactions roll back; those fetched ahead
    /// never start.
    pub(super) fn drop_jobs(&self, ids: &[i64]) {
        let mut aborts = lock(&self.aborts);
        for id in ids {
            if let Some(task) = aborts.remove(id) {
                task.abort();
                crate::trace::cancelled(*id);
            }
        }
        drop(aborts);
        for lane in &self.lanes {
            lock(&lane.waiting).retain(|job| {
                let cancelled = ids.contains(&job.id);
                if cancelled {
                    self.in_flight.release(job.id);
                    crate::trace::cancelled(job.id);
                }
                !cancelled
            });
        }
    }

    pub(super) fn upkeep<'a>(&'a self, drop: &'a (dyn Fn(&[i64]) + Send + Sync)) -> Upkeep<'a> {
        Upkeep {
            pool: &self.own,
            worker: self.worker,
            lease: self.config.timing.lease,
            tick: (self.config.timing.lease / 3).min(self.config.timing.poll_interval),
            retry: &self.config.timing.retry,
            handlers: &self.handlers,
            clock: &self.config.timing.clock,
            woken: &self.woken,
            suspects: Some(&self.suspects),
            running: Some(&self.running),
            in_flight: Some(&self.in_flight),
            max_age: None,
            renewed: &self.renewed,
            retire: &self.retire,
            retired: &self.retired,
            claimable: Some(&self.claimable),
            outbox: self.outbox.as_deref(),
            cancel: Some(super::maintenance::Cancel {
                hint: &self.cancelled,
                drop,
            }),
        }
    }
}

pub(super) use crate::error::lock;
