//! The producer: fetches jobs for the worker's free slots only, starts an executor per job at
//! once, runs a suspect alone, and at shutdown waits for its executors (then cancels them).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{Id, JoinSet};

use super::executor;
use super::shared::Shared;
use crate::error::AttemptError;
use crate::lifecycle::Claimed;
use crate::lifecycle::{self, ClaimRequest, Counters, Fetcher, Next, FETCH_COOLDOWN};
use crate::store;
use crate::trace;
use crate::wake::WAKE_ASYNC as WAKE;

/// The running executors, and the job each runs.
struct Slots {
    tasks: JoinSet<()>,
    jobs: HashMap<Id, Claimed>,
    /// Where maintenance reads how many run (an idle worker reserves a due suspect first).
    shared: Arc<Shared>,
    /// A suspect is running: nothing else may.
    solo: bool,
}

impl Slots {
    fn reap(&mut self, id: Id) {
        if let Some(job) = self.jobs.remove(&id) {
            lock(&self.shared.aborts).remove(&job.id);
        }
        self.shared.running.store(self.jobs.len(), Ordering::SeqCst);
        if self.jobs.is_empty() {
            self.solo = false;
        }
    }

    /// Waits for the next executor to finish (forever when none runs).
    async fn next_done(&mut self) {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => self.reap(id),
            Some(Err(error)) => self.reap(error.id()),
            None => std::future::pending().await,
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The producer's loop, until shutdown; then waits for (or cancels) its executors.
pub(super) async fn produce(shared: Arc<Shared>, done: UnboundedSender<(i64, i64)>) {
    let mut slots = Slots {
        tasks: JoinSet::new(),
        jobs: HashMap::new(),
        shared: Arc::clone(&shared),
        solo: false,
    };
    // After a wake-up from this process the new job may not be committed yet: look again soon.
    let mut soon: Option<Duration> = None;
    let mut backoff = Duration::from_millis(10);
    let mut fetcher = Fetcher::new(shared.config.concurrency);
    let mut last_fetch;
    while !shared.stopping() {
        let woken = shared.woken.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let local = WAKE.notified();
        tokio::pin!(local);
        local.as_mut().enable();
        let stopped = shared.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        let suspects = shared.suspects.load(Ordering::SeqCst);
        let now = std::time::Instant::now();
        let (want, suspects) = match fetcher.next(slots.jobs.len(), slots.solo, suspects, now) {
            Next::WaitForSlot => {
                tokio::select! {
                    () = slots.next_done() => {}
                    () = &mut stopped => {}
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
        if !shared.renewed.fresh(shared.config.timing.lease) {
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
        match fetch(&shared, want, suspects).await {
            Ok(claimed) => {
                backoff = Duration::from_millis(10);
                let full = fetcher.fetched(want, claimed.len());
                if suspects && claimed.is_empty() {
                    shared.suspects.store(false, Ordering::SeqCst);
                }
                slots.solo = suspects && !claimed.is_empty();
                for job in claimed {
                    start(&shared, &mut slots, job, &done);
                }
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
        let wait = soon.unwrap_or(shared.config.timing.poll_interval);
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
                    fetcher.woken();
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
                        .filter(|d| *d < shared.config.timing.poll_interval);
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

async fn fetch(shared: &Shared, want: usize, suspects: bool) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut conn = shared.own.acquire().await?;
    Counters::add(&shared.counters.fetches, 1);
    let handlers = shared.claimable.json();
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

/// Starts an executor for `job`, in a slot of its own.
fn start(
    shared: &Arc<Shared>,
    slots: &mut Slots,
    job: Claimed,
    done: &UnboundedSender<(i64, i64)>,
) {
    let Some(&info) = shared.jobs.get(job.handler.as_str()) else {
        return; // the claim names only linked handlers
    };
    let task = executor::execute(Arc::clone(shared), job.clone(), info, done.clone());
    let handle = slots.tasks.spawn(task);
    lock(&shared.aborts).insert(job.id, handle.clone());
    slots.jobs.insert(handle.id(), job);
    shared.running.store(slots.jobs.len(), Ordering::SeqCst);
}

/// Shutdown: waits `grace` for the running executors (the lease is still renewed), then
/// cancels the rest and records their attempts as failed.
async fn drain(shared: &Shared, mut slots: Slots) {
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
    for (_, job) in slots.jobs.drain() {
        if let Some(&info) = shared.jobs.get(job.handler.as_str()) {
            executor::record_failure(shared, info, &job, &AttemptError::Shutdown).await;
            shared.in_flight.release(job.id);
        }
    }
}
