//! A lane's producer: fetches jobs of the lane's handlers for its free slots (and, while jobs
//! are short, a few ahead into a local queue), starts an executor per job as a slot frees, runs
//! a suspect alone in the worker (the first lane's producer does), and at shutdown gives back
//! the jobs that never started and waits for its executors (then cancels them).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{Id, JoinSet};

use super::executor;
use super::shared::{lock, Shared};
use crate::error::AttemptError;
use crate::lifecycle::Claimed;
use crate::lifecycle::{self, ClaimRequest, Counters, Fetcher, Next, FETCH_COOLDOWN};
use crate::store;
use crate::trace;
use crate::wake::WAKE_ASYNC as WAKE;

/// A lane's running executors, the job each runs and since when, and the fetch sizing they
/// feed.
struct Slots {
    tasks: JoinSet<()>,
    jobs: HashMap<Id, (Claimed, Instant)>,
    shared: Arc<Shared>,
    /// The lane's index.
    lane: usize,
    /// How many of the lane's jobs run at once.
    limit: usize,
    done: UnboundedSender<(i64, i64)>,
    fetcher: Fetcher,
}

impl Slots {
    fn reap(&mut self, id: Id) {
        if let Some((job, started)) = self.jobs.remove(&id) {
            lock(&self.shared.aborts).remove(&job.id);
            self.fetcher.ran(started.elapsed());
        }
        if self.jobs.is_empty() && self.runs_suspects() {
            self.shared.solo.store(false, Ordering::SeqCst);
        }
        self.start_waiting();
    }

    /// Waits for the next executor to finish (forever when none runs), and starts the jobs
    /// fetched ahead in the slots that freed.
    async fn next_done(&mut self) {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => self.reap(id),
            Some(Err(error)) => self.reap(error.id()),
            None => std::future::pending().await,
        }
    }

    /// Whether this lane's producer runs the worker's suspects.
    fn runs_suspects(&self) -> bool {
        self.lane == self.shared.suspect_lane
    }

    /// Whether a suspect runs in the worker (alone: in the suspect lane's one slot).
    fn solo(&self) -> bool {
        self.shared.solo.load(Ordering::SeqCst)
    }

    /// Starts the jobs fetched ahead while slots are free (one slot while a suspect runs: it
    /// is fetched alone, and other lanes start none), and the lease surely holds (once it may
    /// have lapsed, another worker may be rescuing them).
    fn start_waiting(&mut self) {
        let shared = Arc::clone(&self.shared);
        let slots = match (self.solo(), self.runs_suspects()) {
            (false, _) => self.limit,
            (true, true) => 1,
            (true, false) => 0,
        };
        if shared.renewed.fresh(shared.config.timing.lease) {
            while self.jobs.len() < slots {
                let Some(job) = lock(&shared.lanes[self.lane].waiting).pop_front() else {
                    break;
                };
                self.start(job);
            }
        }
        self.publish();
    }

    /// Starts an executor for `job`, in a slot of its own.
    fn start(&mut self, job: Claimed) {
        let Some(&info) = self.shared.jobs.get(job.handler.as_str()) else {
            return; // the claim names only linked handlers
        };
        let shared = Arc::clone(&self.shared);
        let task = executor::execute(shared, job.clone(), info, self.done.clone());
        let handle = self.tasks.spawn(task);
        lock(&self.shared.aborts).insert(job.id, handle.clone());
        self.jobs.insert(handle.id(), (job, Instant::now()));
    }

    /// Takes in a fetch's jobs: each starts in a free slot, the rest wait for one.
    fn take(&mut self, claimed: Vec<Claimed>) {
        lock(&self.shared.lanes[self.lane].waiting).extend(claimed);
        self.start_waiting();
    }

    /// What maintenance reads: how many jobs this worker holds (an idle one reserves a due
    /// suspect first).
    fn publish(&self) {
        let held = self.jobs.len() + lock(&self.shared.lanes[self.lane].waiting).len();
        self.shared.hold(self.lane, held);
    }

    /// What to fetch now. A suspect runs alone in the worker: the suspect lane fetches it once
    /// every lane is empty, and meanwhile (and while it runs) the other lanes fetch nothing.
    fn next(&mut self, waiting: usize) -> Next {
        let flagged = self.shared.suspects.load(Ordering::SeqCst);
        let (held, solo, suspects) = match self.runs_suspects() {
            true => {
                let elsewhere = match flagged {
                    true => self.shared.held_elsewhere(self.lane),
                    false => 0,
                };
                (self.jobs.len() + elsewhere, self.solo(), flagged)
            }
            false => (self.jobs.len(), self.solo() || flagged, false),
        };
        self.fetcher
            .next(held, waiting, solo, suspects, Instant::now())
    }

    /// Whether the lane waits for other lanes (a suspect waits for them to empty, or runs).
    fn held_back(&self) -> bool {
        self.solo() || self.shared.suspects.load(Ordering::SeqCst)
    }
}

/// Lane `lane`'s producer loop, until shutdown; then gives back the jobs fetched ahead and
/// waits for (or cancels) its executors.
pub(super) async fn produce(shared: Arc<Shared>, lane: usize, done: UnboundedSender<(i64, i64)>) {
    let config = &shared.config;
    let limit = shared.claimable.lanes()[lane].limit;
    let mut slots = Slots {
        tasks: JoinSet::new(),
        jobs: HashMap::new(),
        shared: Arc::clone(&shared),
        lane,
        limit,
        done,
        fetcher: Fetcher::new(limit).fetching_ahead(config.fetch_ahead),
    };
    // After a wake-up from this process the new job may not be committed yet: look again soon.
    let mut soon: Option<Duration> = None;
    let mut backoff = Duration::from_millis(10);
    let mut last_fetch;
    while !shared.stopping() {
        let woken = shared.woken(lane).notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let local = WAKE.notified();
        tokio::pin!(local);
        local.as_mut().enable();
        let stopped = shared.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        slots.start_waiting();
        let waiting = lock(&shared.lanes[lane].waiting).len();
        let (want, suspects) = match slots.next(waiting) {
            Next::WaitForSlot => {
                let held_back = slots.held_back();
                tokio::select! {
                    () = slots.next_done() => {}
                    () = &mut stopped => {}
                    // The lease lapsed with jobs waiting, or another lane runs a suspect (or
                    // empties for one): look again soon.
                    () = tokio::time::sleep(Duration::from_millis(50)), if waiting > 0 || held_back => {}
                }
                continue;
            }
            Next::GatherUntil(at) => {
                tokio::select! {
                    () = slots.next_done() => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = &mut stopped => {}
                }
                continue;
            }
            Next::Fetch { limit, suspects } => (limit, suspects),
        };
        if !shared.renewed.fresh(config.timing.lease) {
            // The lease may have lapsed (its renewals failed or were held up): other workers
            // may be rescuing this worker's jobs, so it takes no more until a renewal holds.
            tokio::select! {
                () = slots.next_done() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = &mut stopped => {}
            }
            continue;
        }
        last_fetch = tokio::time::Instant::now();
        // The running jobs go on finishing, and the waiting ones starting, while it fetches.
        let fetched = {
            let fetching = fetch(&shared, lane, want, suspects);
            tokio::pin!(fetching);
            loop {
                tokio::select! {
                    fetched = &mut fetching => break fetched,
                    () = slots.next_done() => {}
                }
            }
        };
        match fetched {
            Ok(claimed) => {
                backoff = Duration::from_millis(10);
                let full = slots
                    .fetcher
                    .fetched(want, claimed.len(), last_fetch.elapsed());
                if suspects && claimed.is_empty() {
                    shared.suspects.store(false, Ordering::SeqCst);
                }
                if suspects && !claimed.is_empty() {
                    shared.solo.store(true, Ordering::SeqCst);
                }
                slots.take(claimed);
                if full || suspects {
                    soon = None;
                    continue;
                }
            }
            Err(error) => {
                trace::database_error("claim", &error.into());
                backoff = (backoff * 2).min(Duration::from_secs(5));
                soon = Some(backoff);
            }
        }
        // Nothing (more) to fetch: wait for a wake-up, reaping executors meanwhile.
        let wait = soon.unwrap_or(config.timing.poll_interval);
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // Committed (PostgreSQL notifies at commit), rescued, or a suspect is due. While
                // jobs run, a stream of commits wakes at most one fetch per cooldown: the
                // notifications that come meanwhile are answered by that fetch. An idle worker
                // fetches at once.
                () = &mut woken => {
                    soon = None;
                    slots.fetcher.woken();
                    cool_down(&mut slots, last_fetch, &mut stopped).await;
                    break;
                }
                // Written in this process, maybe not committed yet (LISTEN tells of commits).
                () = &mut local, if !shared.listens => {
                    soon = Some(Duration::from_micros(200));
                    cool_down(&mut slots, last_fetch, &mut stopped).await;
                    break;
                }
                () = &mut deadline => {
                    soon = soon
                        .map(|d| d * 2)
                        .filter(|d| *d < config.timing.poll_interval);
                    break;
                }
                () = &mut stopped => break,
                () = slots.next_done() => {}
            }
        }
    }
    drain(&shared, slots).await;
}

/// While jobs run, waits until [`FETCH_COOLDOWN`] has passed since the last fetch (or
/// shutdown), reaping executors meanwhile; an idle worker does not wait.
async fn cool_down(
    slots: &mut Slots,
    last_fetch: tokio::time::Instant,
    stopped: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) {
    if slots.jobs.is_empty() {
        return;
    }
    let ready = tokio::time::sleep_until(last_fetch + FETCH_COOLDOWN);
    tokio::pin!(ready);
    loop {
        tokio::select! {
            () = &mut ready => return,
            () = stopped.as_mut() => return,
            () = slots.next_done() => {}
        }
    }
}

/// Claims up to `want` jobs of `lane`'s handlers, or a suspect of any of the worker's.
async fn fetch(
    shared: &Shared,
    lane: usize,
    want: usize,
    suspects: bool,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut conn = shared.own.acquire().await?;
    Counters::add(&shared.counters.fetches, 1);
    let handlers = match suspects {
        true => shared.claimable.json(),
        false => shared.claimable.lane(lane),
    };
    let request = ClaimRequest {
        handlers: &handlers,
        limit: want,
        suspects,
        worker: shared.worker,
        now: shared.now(),
        token: lifecycle::token(),
    };
    shared.in_flight.claiming(request.token);
    let claimed = store::claim(conn.tx(), &request)
        .await
        .inspect_err(|error| {
            if lifecycle::reply_lost(error) {
                // Maintenance gives back whatever the server committed under this token.
                shared.in_flight.lost(request.token);
            }
            shared.in_flight.claimed(request.token, &[]);
        })?;
    shared.in_flight.claimed(request.token, &claimed);
    Counters::add(&shared.counters.claimed, claimed.len() as u64);
    Ok(claimed)
}

/// Shutdown: gives back the jobs fetched ahead (uncharged: they never started), waits `grace`
/// for the running executors (the lease is still renewed), then cancels the rest and records
/// their attempts as failed.
async fn drain(shared: &Shared, mut slots: Slots) {
    give_back(shared, slots.lane).await;
    let grace = Duration::from_millis(shared.grace_ms.load(Ordering::SeqCst));
    let finished = tokio::time::timeout(grace, async {
        while !slots.jobs.is_empty() {
            slots.next_done().await;
        }
    })
    .await;
    if finished.is_ok() {
        return;
    }
    slots.tasks.abort_all();
    while let Some(result) = slots.tasks.join_next_with_id().await {
        if let Ok((id, ())) = result {
            slots.reap(id); // it finished before the abort reached it
        }
    }
    for (_, (job, _)) in slots.jobs.drain() {
        if let Some(&info) = shared.jobs.get(job.handler.as_str()) {
            executor::record_failure(shared, info, &job, &AttemptError::Shutdown).await;
            shared.in_flight.release(job.id);
        }
    }
}

/// Gives back the jobs fetched ahead that never started. Should the statement fail, they stay
/// held by no one: maintenance fails them as orphans (charged), or, once this worker is gone,
/// another rescues them, as after a crash.
async fn give_back(shared: &Shared, lane: usize) {
    let waiting: Vec<Claimed> = lock(&shared.lanes[lane].waiting).drain(..).collect();
    if waiting.is_empty() {
        return;
    }
    let jobs: Vec<(i64, i64)> = waiting.iter().map(|job| (job.id, job.token)).collect();
    let given = async {
        let mut conn = shared.own.acquire().await?;
        store::give_back(conn.tx(), &jobs).await
    };
    if let Err(error) = given.await {
        trace::database_error("give back the jobs fetched ahead", &error.into());
    }
    for job in &waiting {
        shared.in_flight.release(job.id);
    }
}
