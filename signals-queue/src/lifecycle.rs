//! The job life cycle, written once for both workers (the thread [`Worker`](crate::Worker) over
//! rusqlite and the tokio [`AsyncWorker`](crate::AsyncWorker) over sqlx) and the broker's relay.
//!
//! ```text
//!            fetch (for a free slot; the attempt is charged: the handler starts now)
//! pending ─────────────────────────────────────────────▶ running ──complete──▶ done
//!    ▲                                                     │  │
//!    ├──────────── fail (attempts left; after a backoff) ──┘  └──fail──▶ dead
//!    │                                                          (no attempts left, or
//!    ├──── rescue (its worker stopped renewing its lease:        a payload that cannot run)
//!    │      a crash; after a backoff, and from then on the
//!    │      job runs alone in its worker: a suspect)
//! dead ──retry_dead──▶ pending
//! ```
//!
//! Every transition is one SQL statement guarded by the state it expects and, from `running`,
//! by the claim's token; the statements are the constants of `postgres.rs` and `sqlite_sql.rs`
//! named after them (`CLAIM`, `COMPLETE`, `COMPLETE_MANY`, `FAIL`, `RESCUE`, `RETRY_DEAD`).
//!
//! - **Fetch for free slots.** A worker claims at most as many jobs as it has idle slots, in
//!   claim order (priority, then `run_at`, then id), and starts each at once: no job waits,
//!   claimed, behind another. The claim charges the attempt. Only while jobs are shorter than
//!   a claim does the async worker fetch a few ahead (`Fetcher`), into a local queue that a
//!   shutdown gives back uncharged (a crash charges them, as it charges the running ones).
//! - **Leases belong to workers, not jobs.** A worker renews one row of `signals_workers` every
//!   third of its lease; a running job is live while its worker's row is. On PostgreSQL the
//!   database's clock judges the lease (`now()`), so no two machines' clocks are compared; on
//!   SQLite a rescuer judges another worker stale when its renewal counter has not moved for a
//!   lease, as measured on the rescuer's own monotonic clock (`StaleWatch`).
//! - **Crashes are not failures of the neighbours.** A rescued job is charged the attempt it
//!   crashed in, waits out a backoff, and is a *suspect* from then on (`crashes > 0`): a worker
//!   runs a suspect alone, with no other job in its process, until it is done or dead. A job
//!   that aborts its process therefore condemns only itself; the jobs that were running beside
//!   it are charged once and then run alone, where they succeed.
//! - **Completion.** A handler that opened the job's transaction completes the job in it, so
//!   its database effects and the completion commit together (exactly once). A handler that
//!   never touched the database is completed by the completer, many jobs to one statement; a
//!   crash before that flush runs it again (at least once, like any effect outside the
//!   database).
//! - **Orphans.** An outcome the database will not take is written again until the lease would
//!   lapse (`Persist`); then the worker lets go of the job, and maintenance fails the running
//!   rows of its worker that nothing holds (`InFlight`), attempts charged, and gives back a
//!   claim whose reply was lost.
//! - **One suspect, one worker.** A worker reserves a due suspect before it drains for it (an
//!   idle one at once, a busy one after a lease: `suspect_wait`).
//!
//! What the two workers do differently is how they wait and run (threads and channels, or
//! tasks); what they decide is here, without I/O: the fetch sizing and cooldown (`Fetcher`),
//! the timeouts, the maintenance ticks, the records of failures and orphans, how a write is
//! retried (`Persist`, `FlushRetry`). What they do once the database answered (counters,
//! tracing, the jobs in flight) is the `outcome` module's, and each SQLite statement's
//! arguments and rows are bound and read once (`sqlite_bind`) for rusqlite and sqlx alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Millis;
use crate::timing::RetryPolicy;
use crate::timing::Timing;
pub(crate) use crate::verdict::Verdict;

pub use crate::timing::DEFAULT_PAYLOAD_GRACE;

/// The completer flushes once it holds this many completions...
pub(crate) const FLUSH_JOBS: usize = 512;

/// ... or once its oldest completion has waited this long.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(5);

/// The most jobs one fetch claims, however many slots are free.
pub(crate) const FETCH_LIMIT: usize = 256;

/// How many claimed jobs an async worker lets wait for a free slot while jobs are short, by
/// default ([`AsyncWorkerBuilder::fetch_ahead`](crate::AsyncWorkerBuilder::fetch_ahead)).
pub const DEFAULT_FETCH_AHEAD: usize = 64;

/// While more jobs wait, a fetch waits this long for a quarter of the slots to be free, so that
/// a busy worker fetches many jobs per statement rather than one per finished job; and a stream
/// of notifications wakes at most one fetch this often.
pub(crate) const FETCH_COOLDOWN: Duration = Duration::from_millis(5);

/// What a worker's producer does next: the fetch sizing, the cooldown and the suspect rule,
/// written once for both workers, which differ only in how they wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Every slot is taken (and the jobs fetched ahead wait for one), or a suspect runs (or
    /// waits for the worker to itself): wait for a running job to end.
    WaitForSlot,
    /// Jobs wait but few slots are free: wait until then (or a job ends) to fetch for more.
    GatherUntil(Instant),
    /// Claim up to `limit` jobs: suspects (one, to run alone) or others.
    Fetch { limit: usize, suspects: bool },
}

/// A producer's fetch sizing: fetch for the free slots, at most [`FETCH_LIMIT`] a claim; while
/// the last fetch came back full, gather a quarter of the room (for up to [`FETCH_COOLDOWN`])
/// before fetching again; a due suspect waits for the worker to empty, then runs alone.
///
/// **Fetching ahead.** While recent jobs ran for less time than recent claims took (short
/// jobs: the slots would empty faster than a claim refills them), a producer that may fetch
/// ahead claims up to `ahead` jobs more than its free slots, which wait in a local queue and
/// start as slots free up, while the next claim is under way. Longer jobs (I/O-bound ones) are
/// fetched for free slots only, so no job waits claimed in one worker while another has room.
#[derive(Debug)]
pub(crate) struct Fetcher {
    concurrency: usize,
    /// How many claimed jobs may wait for a slot while jobs are short (0: never).
    ahead: usize,
    /// The last fetch was full: more jobs are likely due.
    more: bool,
    /// Since when there has been room while less than a quarter of it was free.
    free_since: Option<Instant>,
    /// How long recent jobs ran, and recent claims took.
    run: Mean,
    claim: Mean,
}

/// An exponentially weighted mean of durations (each new one weighs an eighth).
#[derive(Debug, Default, Clone, Copy)]
struct Mean(Option<Duration>);

impl Mean {
    fn add(&mut self, took: Duration) {
        self.0 = Some(match self.0 {
            None => took,
            Some(mean) => (mean * 7 + took) / 8,
        });
    }
}

impl Fetcher {
    /// Fetches for free slots only.
    pub(crate) fn new(concurrency: usize) -> Fetcher {
        Fetcher {
            concurrency: concurrency.max(1),
            ahead: 0,
            more: false,
            free_since: None,
            run: Mean::default(),
            claim: Mean::default(),
        }
    }

    /// Lets up to `ahead` claimed jobs wait for a slot while jobs are short.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn fetching_ahead(self, ahead: usize) -> Fetcher {
        Fetcher { ahead, ..self }
    }

    /// Whether jobs fetched now may wait for a slot: recent jobs ran shorter than a claim took.
    pub(crate) fn short_jobs(&self) -> bool {
        match (self.run.0, self.claim.0) {
            (Some(run), Some(claim)) => self.ahead > 0 && run < claim,
            _ => false,
        }
    }

    /// What to do now, with `running` jobs running and `waiting` fetched ahead (a producer
    /// starts those before it asks, so either no slot is free or none waits), `solo` if a
    /// suspect runs, and `suspects` if this worker holds a due suspect's reservation.
    pub(crate) fn next(
        &mut self,
        running: usize,
        waiting: usize,
        solo: bool,
        suspects: bool,
        now: Instant,
    ) -> Next {
        let held = running + waiting;
        if solo || (suspects && held > 0) {
            return Next::WaitForSlot;
        }
        let capacity = match self.short_jobs() && !suspects {
            true => self.concurrency + self.ahead,
            false => self.concurrency,
        };
        let room = capacity.saturating_sub(held);
        if room == 0 {
            return Next::WaitForSlot;
        }
        let gather = (capacity / 4).max(1);
        if self.more && !suspects && room < gather {
            let since = *self.free_since.get_or_insert(now);
            if now.duration_since(since) < FETCH_COOLDOWN {
                return Next::GatherUntil(since + FETCH_COOLDOWN);
            }
        }
        self.free_since = None;
        match suspects {
            true => Next::Fetch {
                limit: 1,
                suspects: true,
            },
            false => Next::Fetch {
                limit: room.min(FETCH_LIMIT),
                suspects: false,
            },
        }
    }

    /// A fetch of `limit` claimed `claimed` jobs and took `took`; whether it came back full
    /// (look again at once).
    pub(crate) fn fetched(&mut self, limit: usize, claimed: usize, took: Duration) -> bool {
        self.claim.add(took);
        self.more = claimed == limit;
        self.more
    }

    /// A job ran for `took` (from its start to its end, its outcome not yet recorded).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn ran(&mut self, took: Duration) {
        self.run.add(took);
    }

    /// Something woke the worker (a commit, a rescue): jobs are likely due.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn woken(&mut self) {
        self.more = true;
    }
}

/// How long a due suspect waits before a worker running `running` jobs reserves it: an idle
/// worker takes it at once; a busy one, which would have to let its jobs finish first, only
/// after a lease with no idle worker taking it. One worker drains for a suspect, not every one.
pub(crate) fn suspect_wait(running: usize, lease: Duration) -> Duration {
    match running {
        0 => Duration::ZERO,
        _ => lease,
    }
}

/// How long an attempt may run: its handler's own `timeout`, or the worker's.
pub(crate) fn attempt_timeout(own: Option<Duration>, timing: &Timing) -> Duration {
    own.unwrap_or(timing.job_timeout)
}

/// How often maintenance renews the lease (a third of it), and how often it looks after the
/// rest (rescues, promotions, suspects, orphans, timeouts): at most a third of the lease, and
/// at most `every`.
pub(crate) fn maintenance_ticks(lease: Duration, every: Duration) -> (Duration, Duration) {
    let renew = lease / 3;
    (renew, every.min(renew).max(Duration::from_millis(5)))
}

/// A write the worker keeps trying: a failed attempt's record, or a completion at shutdown. It
/// is tried again after a backoff (5 ms doubling, at most a second) until `give_up`: a lease
/// after the first try, when another worker may rescue the job anyway; then the job is left
/// to maintenance (an orphan) or to a rescue.
#[derive(Debug)]
pub(crate) struct Persist {
    give_up: Instant,
    backoff: Duration,
}

impl Persist {
    /// Tries for up to `lease` from now.
    pub(crate) fn for_lease(lease: Duration) -> Persist {
        Persist {
            give_up: Instant::now() + lease,
            backoff: Duration::from_millis(5),
        }
    }

    /// When it gives up: no single try should outlast it.
    pub(crate) fn deadline(&self) -> Instant {
        self.give_up
    }

    /// After a failed try: how long to wait before the next, or `None` to give up.
    pub(crate) fn again(&mut self) -> Option<Duration> {
        let pause = self.backoff;
        if Instant::now() + pause >= self.give_up {
            return None;
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
        Some(pause)
    }
}

/// How the completer retries a flush that failed: after a backoff (5 ms doubling, at most 5 s)
/// while the worker runs (its jobs stay `running` under its lease meanwhile, and a rescue
/// takes them back if it dies); once it closes, for a lease more ([`Persist`]), then the jobs
/// are left to a rescue (run again: at least once).
#[derive(Debug)]
pub(crate) struct FlushRetry {
    backoff: Duration,
    closing: Option<Persist>,
}

impl Default for FlushRetry {
    fn default() -> Self {
        FlushRetry {
            backoff: Duration::from_millis(5),
            closing: None,
        }
    }
}

impl FlushRetry {
    /// Before each try: whether the worker is closing now (from then on, a lease more).
    pub(crate) fn closing(&mut self, closing: bool, lease: Duration) {
        if closing && self.closing.is_none() {
            self.closing = Some(Persist::for_lease(lease));
        }
    }

    /// Once closing, when it gives up: no single try should outlast it.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.closing.as_ref().map(Persist::deadline)
    }

    /// After a failed try: how long to wait before the next, or `None` to give up.
    pub(crate) fn again(&mut self) -> Option<Duration> {
        if let Some(persist) = &mut self.closing {
            return persist.again();
        }
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
        Some(pause)
    }
}

/// A failed attempt's record for `job`, from its error and the worker's timings.
pub(crate) fn failure<'e>(
    job: &Claimed,
    error: &crate::error::AttemptError,
    message: &'e str,
    timing: &Timing,
) -> Failure<'e> {
    let verdict = match error {
        crate::error::AttemptError::Handler(error) => Verdict::of(&**error),
        _ => Verdict::Fail,
    };
    Failure {
        permanent: error.is_permanent(),
        delay_ms: match verdict {
            Verdict::Snooze(after) => after.as_millis() as i64,
            _ => retry_delay(&timing.retry, job.attempt),
        },
        verdict,
        error: message,
        now: timing.clock.fixed(),
        dead_after_ms: error
            .is_payload()
            .then_some(timing.payload_grace.as_millis() as i64),
    }
}

/// An orphan's record (see [`InFlight::orphans`]): failed the normal way, its attempt charged,
/// and dead if written longer ago than `max_age` (a relay's), as any failure of its claimer.
pub(crate) fn orphan_failure(
    job: &Claimed,
    retry: &RetryPolicy,
    max_age: Option<Duration>,
    now: Option<Millis>,
) -> Failure<'static> {
    Failure {
        permanent: false,
        delay_ms: retry_delay(retry, job.attempt),
        verdict: Verdict::Fail,
        error: ORPHANED,
        dead_after_ms: max_age.map(|age| age.as_millis() as i64),
        now,
    }
}

/// Job ids as a JSON array, as statements that take a list read it.
pub(crate) fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("ids serialize")
}

/// This process's label, in its workers' lease rows and in each attempt they run: `host:pid`
/// (the host from the kernel's hostname, else `$HOSTNAME`, else `unknown`).
pub(crate) fn worker_label() -> &'static str {
    static LABEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LABEL.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        format!("{host}:{}", std::process::id())
    })
}

/// The message a rescued job's `last_error` carries.
pub(crate) const RESCUED: &str =
    "the worker running the job stopped renewing its lease: it crashed, was killed or lost the database";

/// A job as a claim returns it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job's row id.
    pub id: i64,
    /// The id of the `notify` that wrote it.
    pub event_id: String,
    /// The job name of its handler (or publishing function).
    pub handler: String,
    /// The signal (or message) as JSON.
    pub payload: String,
    /// This attempt, charged at the claim (the handler starts at once): 1 for the first.
    pub attempt: u32,
    /// The claim's token: completing and failing the job need it.
    pub token: i64,
    /// The job's priority (claim order: higher first).
    pub priority: i32,
    /// When it became runnable (claim order: earlier first); 0 for a fresh job on SQLite.
    pub run_at: i64,
    /// When it was written (ms since the epoch, the writer's clock): its due time is the later
    /// of this and `run_at`.
    pub created_at: i64,
}

/// What a claim asks for.
pub struct ClaimRequest<'a> {
    /// What the claimer can run: a JSON array of `{"name": job name, "signal": signal type
    /// name}` (a claim takes a row only if both match).
    pub handlers: &'a str,
    /// At most this many jobs.
    pub limit: usize,
    /// Suspects (jobs rescued after a crash, which run alone) rather than other jobs.
    pub suspects: bool,
    /// The claimer's worker id: its lease row keeps the jobs.
    pub worker: i64,
    /// A manual clock's time; `None`: the database's clock (PostgreSQL) or this process's.
    pub now: Option<Millis>,
    /// The claim's token (`token`): written on every row it claims, so that a claim whose
    /// reply was lost (the connection dropped after the server committed it) can be undone by
    /// token.
    pub token: i64,
}

/// A failed attempt, as the `FAIL` transition records it.
pub struct Failure<'a> {
    /// Retrying cannot help: dead at once.
    pub permanent: bool,
    /// The backoff before the next attempt (a snooze's delay).
    pub delay_ms: i64,
    /// What the handler's error asked for: a failure, a snooze or a discard.
    pub(crate) verdict: Verdict,
    /// The error, for `last_error`.
    pub error: &'a str,
    /// Dead (rather than retried) if the job was written longer ago than this many ms: a
    /// payload that does not deserialize is retried through a deploy, then dead.
    pub dead_after_ms: Option<i64>,
    /// A manual clock's time; `None`: the database's (or this process's) clock.
    pub now: Option<Millis>,
}

/// What a running worker has done since it started: for dashboards, and for tests that check
/// how much work the worker asks of the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Claim statements run (each for the free slots of that moment, and the room ahead).
    pub fetches: u64,
    /// Jobs those claims took (each started at once, or as a slot freed if fetched ahead).
    pub claimed: u64,
    /// Jobs completed in the transaction their handler wrote in.
    pub completed_with_writes: u64,
    /// Jobs completed by the completer (their handlers never opened the transaction).
    pub completed_in_batches: u64,
    /// The completer's statements.
    pub flushes: u64,
    /// Failed attempts recorded (errors, panics, timeouts, cancellations).
    pub failed: u64,
    /// Attempts whose handler asked to be tried again later ([`Snooze`](crate::Snooze)).
    pub snoozed: u64,
    /// Jobs whose handler discarded them ([`Discard`](crate::Discard)).
    pub discarded: u64,
}

/// The counters behind [`WorkerStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) fetches: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) completed_with_writes: AtomicU64,
    pub(crate) completed_in_batches: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) snoozed: AtomicU64,
    pub(crate) discarded: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WorkerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerStats {
            fetches: read(&self.fetches),
            claimed: read(&self.claimed),
            completed_with_writes: read(&self.completed_with_writes),
            completed_in_batches: read(&self.completed_in_batches),
            flushes: read(&self.flushes),
            failed: read(&self.failed),
            snoozed: read(&self.snoozed),
            discarded: read(&self.discarded),
        }
    }
}

/// Puts claimed jobs in claim order (priority, then `run_at`, then id): a statement's
/// `RETURNING` promises no order.
pub(crate) fn claim_order(jobs: &mut [Claimed]) {
    jobs.sort_by_key(|job| (std::cmp::Reverse(job.priority), job.run_at, job.id));
}

/// A fresh id for a worker (or relay): the key of its lease row and of the jobs it runs.
pub(crate) fn worker_id() -> i64 {
    fastrand::i64(1..i64::MAX)
}

/// A claim's token.
pub(crate) fn token() -> i64 {
    fastrand::i64(1..i64::MAX)
}

/// The backoff after failed attempt `attempt`, in milliseconds.
pub(crate) fn retry_delay(policy: &RetryPolicy, attempt: u32) -> i64 {
    policy.delay(attempt, fastrand::f64()).as_millis() as i64
}

/// The completions the completer flushes in one statement, as the JSON array of `[id, token]`
/// pairs its statement reads.
pub(crate) fn completions_json(done: &[(i64, i64)]) -> String {
    let mut json = String::with_capacity(done.len() * 44 + 2);
    json.push('[');
    for (i, (id, token)) in done.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!("[{id},{token}]"));
    }
    json.push(']');
    json
}

/// Judges other workers' leases on SQLite without reading their clocks: a worker is stale
/// when its renewal counter (`beats`) has not moved for its lease, measured on this process's
/// monotonic clock from when this watch saw it move (or first saw it). Stillness counts only
/// while this watch could look: when its own previous look is more than half a worker's lease
/// ago (it waited, as every writer did, for a transaction holding the file's write lock, so
/// that worker could not renew either), that worker's wait starts again.
#[derive(Default)]
#[cfg_attr(
    not(any(feature = "sqlite", feature = "sqlx-sqlite")),
    allow(dead_code)
)]
pub(crate) struct StaleWatch {
    seen: HashMap<i64, (i64, Instant)>,
    last_look: Option<Instant>,
}

#[cfg_attr(
    not(any(feature = "sqlite", feature = "sqlx-sqlite")),
    allow(dead_code)
)]
impl StaleWatch {
    /// Takes in the rows of `signals_workers` (id, beats, lease in ms) read now; returns the ids
    /// of the stale workers other than `me`.
    pub(crate) fn observe(&mut self, me: i64, rows: &[(i64, i64, i64)]) -> Vec<i64> {
        let now = Instant::now();
        let gap = self
            .last_look
            .replace(now)
            .map_or(Duration::ZERO, |last| now.duration_since(last));
        self.seen
            .retain(|id, _| rows.iter().any(|row| row.0 == *id));
        let mut stale = Vec::new();
        for &(id, beats, lease_ms) in rows.iter().filter(|row| row.0 != me) {
            let lease = Duration::from_millis(lease_ms.max(0) as u64);
            let entry = self.seen.entry(id).or_insert((beats, now));
            if entry.0 != beats || gap > lease / 2 {
                *entry = (beats, now);
            } else if now.duration_since(entry.1) > lease {
                stale.push(id);
            }
        }
        stale
    }
}

/// The jobs a worker (or relay) holds: claimed, and whose outcome is not recorded yet; and the
/// claims whose reply was lost. Maintenance compares it with the `running` rows under the
/// worker's id ([`orphans`](Self::orphans)): a row that nothing of the worker holds any more
/// (its outcome could not be recorded and the executor gave up, or its claim's reply never
/// arrived) would otherwise stay `running` under a live lease forever.
#[derive(Default)]
#[doc(hidden)] // the workers' and the relay's; not public API
pub struct InFlight {
    inner: std::sync::Mutex<InFlightInner>,
}

#[derive(Default)]
struct InFlightInner {
    /// Job id → claim token.
    held: HashMap<i64, i64>,
    /// Claim tokens whose reply was lost, and since when.
    lost: HashMap<i64, Instant>,
    /// Claims sent whose reply has not been taken in yet: their rows are held.
    claiming: std::collections::HashSet<i64>,
    /// The `(id, token)` rows found unheld at the last look: an orphan is unheld twice in a
    /// row, so a claim whose rows are being registered is not mistaken for one.
    unheld: std::collections::HashSet<(i64, i64)>,
}

/// What maintenance does with the `running` rows nothing of the worker holds.
#[derive(Debug, Default)]
pub(crate) struct Orphans {
    /// Claims whose reply was lost: given back, their attempts uncharged (no handler ran).
    pub(crate) unclaim: Vec<i64>,
    /// Jobs whose outcome was never recorded: failed the normal way, their attempts charged
    /// (a write that is always refused cannot run a handler again and again).
    pub(crate) fail: Vec<Claimed>,
}

impl Orphans {
    /// Each job to fail, with its record ([`orphan_failure`]).
    pub(crate) fn failures<'a>(
        &'a self,
        retry: &'a RetryPolicy,
        max_age: Option<Duration>,
        now: Option<Millis>,
    ) -> impl Iterator<Item = (&'a Claimed, Failure<'static>)> + 'a {
        self.fail
            .iter()
            .map(move |job| (job, orphan_failure(job, retry, max_age, now)))
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightInner> {
        crate::error::lock(&self.inner)
    }

    /// A claim is about to be sent under `token`: the rows it writes are held from the moment
    /// it commits, before its reply is taken in ([`claimed`](Self::claimed)).
    pub fn claiming(&self, token: i64) {
        self.lock().claiming.insert(token);
    }

    /// The claim sent under `token` took `jobs` (none if it failed): they are held until their
    /// outcome is recorded.
    pub fn claimed(&self, token: i64, jobs: &[Claimed]) {
        let mut inner = self.lock();
        for job in jobs {
            inner.held.insert(job.id, job.token);
        }
        inner.claiming.remove(&token);
    }

    /// The job's outcome is recorded (or given up on: maintenance takes it from here).
    pub fn release(&self, id: i64) {
        self.lock().held.remove(&id);
    }

    /// The ids of the jobs held now.
    pub(crate) fn held(&self) -> Vec<i64> {
        self.lock().held.keys().copied().collect()
    }

    /// A claim's reply was lost: the server may have committed it, now or later.
    pub fn lost(&self, token: i64) {
        self.lock().lost.insert(token, Instant::now());
    }

    /// Takes in the `running` rows under this worker's id (`(id, token, attempt)`, read now);
    /// returns what to do with those nothing holds. A lost claim's token is remembered for
    /// `remember_lost` (a statement the server was still running commits within it).
    pub(crate) fn orphans(&self, running: &[(i64, i64, i32)], remember_lost: Duration) -> Orphans {
        let mut inner = self.lock();
        inner
            .lost
            .retain(|_, since| since.elapsed() < remember_lost);
        let mut orphans = Orphans::default();
        let mut unheld = std::collections::HashSet::new();
        for &(id, token, attempt) in running {
            if inner.held.get(&id) == Some(&token) || inner.claiming.contains(&token) {
                continue;
            }
            if inner.lost.contains_key(&token) {
                if !orphans.unclaim.contains(&token) {
                    orphans.unclaim.push(token);
                }
            } else if inner.unheld.contains(&(id, token)) {
                orphans.fail.push(Claimed {
                    id,
                    event_id: String::new(),
                    handler: String::new(),
                    payload: String::new(),
                    attempt: attempt.max(0) as u32,
                    token,
                    priority: 0,
                    run_at: 0,
                    created_at: 0,
                });
            } else {
                unheld.insert((id, token));
            }
        }
        inner.unheld = unheld;
        orphans
    }
}

/// When a worker last renewed its lease, by this process's monotonic clock: a worker whose own
/// lease may have lapsed (its heartbeats failed or were held up) claims nothing, since other
/// workers may be rescuing its jobs.
#[doc(hidden)] // the workers' and the relay's; not public API
pub struct LeaseClock {
    origin: Instant,
    /// Milliseconds from `origin` to the last renewal's start.
    renewed_ms: AtomicU64,
}

impl Default for LeaseClock {
    /// Renewed now (a worker's `build` registers its lease).
    fn default() -> Self {
        LeaseClock {
            origin: Instant::now(),
            renewed_ms: AtomicU64::new(0),
        }
    }
}

impl LeaseClock {
    /// A renewal sent at `at` succeeded.
    pub fn renewed_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.origin).as_millis() as u64;
        self.renewed_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Whether the lease surely still holds: renewed less than nine tenths of `lease` ago.
    pub fn fresh(&self, lease: Duration) -> bool {
        let renewed = self.origin + Duration::from_millis(self.renewed_ms.load(Ordering::SeqCst));
        renewed.elapsed() < lease.mul_f64(0.9)
    }
}

/// The error an orphaned job's attempt is recorded with.
pub(crate) const ORPHANED: &str =
    "the worker could not record this attempt's outcome (the database refused or lost the write)";

/// Whether a failed claim's reply may have been lost after the server committed it (the
/// connection broke): then it is undone by its token. Any other error means nothing was claimed
/// (the database refused the statement, or no connection was had), or that the claim
/// committed and its rows could not be read (a decode error): those jobs stay charged, and
/// maintenance fails them as orphans rather than giving them back to be claimed (and misread)
/// again and again.
#[cfg(feature = "async")]
pub(crate) fn reply_lost(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// Counts by handler as the `COUNT_DONE` statements take them: a JSON object.
#[cfg(any(feature = "sqlite", feature = "sqlx-sqlite"))]
pub(crate) fn counts_json(counts: &std::collections::HashMap<String, i64>) -> String {
    serde_json::to_string(counts).expect("counts serialize")
}

/// `each` per handler in `handlers`, summed by handler.
#[cfg(any(feature = "sqlite", feature = "sqlx-sqlite"))]
pub(crate) fn count_by_handler<'a>(
    handlers: impl IntoIterator<Item = &'a String>,
    each: i64,
) -> std::collections::HashMap<String, i64> {
    let mut counts = std::collections::HashMap::new();
    for handler in handlers {
        *counts.entry(handler.clone()).or_default() += each;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_jobs_run_by_priority_then_time_then_id() {
        let job = |id, priority, run_at| Claimed {
            id,
            event_id: String::new(),
            handler: String::new(),
            payload: String::new(),
            attempt: 1,
            token: 1,
            priority,
            run_at,
            created_at: 0,
        };
        let mut jobs = vec![job(1, 0, 5), job(2, 10, 9), job(3, 0, 1), job(4, 0, 1)];
        claim_order(&mut jobs);
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
        assert_eq!(ids, [2, 3, 4, 1]);
    }

    #[test]
    fn completions_are_id_token_pairs() {
        assert_eq!(completions_json(&[]), "[]");
        assert_eq!(completions_json(&[(1, 2), (3, -4)]), "[[1,2],[3,-4]]");
    }

    #[test]
    fn a_producer_fetches_for_free_slots_gathers_while_busy_and_runs_a_suspect_alone() {
        let mut fetcher = Fetcher::new(8);
        let now = Instant::now();
        assert_eq!(fetcher.next(8, 0, false, false, now), Next::WaitForSlot);
        let fetch = |limit, suspects| Next::Fetch { limit, suspects };
        assert_eq!(fetcher.next(0, 0, false, false, now), fetch(8, false));
        // A full fetch: more jobs wait, so one free slot of eight waits a moment for a second.
        assert!(fetcher.fetched(8, 8, Duration::from_millis(1)));
        assert_eq!(
            fetcher.next(7, 0, false, false, now),
            Next::GatherUntil(now + FETCH_COOLDOWN)
        );
        assert_eq!(fetcher.next(6, 0, false, false, now), fetch(2, false));
        assert_eq!(
            fetcher.next(7, 0, false, false, now + FETCH_COOLDOWN),
            Next::GatherUntil(now + FETCH_COOLDOWN * 2)
        );
        assert_eq!(
            fetcher.next(7, 0, false, false, now + FETCH_COOLDOWN * 2),
            fetch(1, false)
        );
        // A suspect waits for the worker to empty, then runs alone.
        assert_eq!(fetcher.next(3, 0, false, true, now), Next::WaitForSlot);
        assert_eq!(fetcher.next(0, 0, false, true, now), fetch(1, true));
        assert_eq!(fetcher.next(0, 0, true, false, now), Next::WaitForSlot);
        // At most FETCH_LIMIT a fetch.
        assert_eq!(
            Fetcher::new(1000).next(0, 0, false, false, now),
            fetch(FETCH_LIMIT, false)
        );
        assert_eq!(suspect_wait(0, Duration::from_secs(30)), Duration::ZERO);
    }

    #[test]
    fn a_producer_fetches_ahead_only_while_jobs_are_shorter_than_claims() {
        let fetch = |limit| Next::Fetch {
            limit,
            suspects: false,
        };
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut fetcher = Fetcher::new(16).fetching_ahead(48);
        // Nothing measured yet: free slots only.
        assert_eq!(fetcher.next(0, 0, false, false, now), fetch(16));
        assert!(!fetcher.fetched(16, 15, ms(4)));
        fetcher.ran(ms(1));
        assert!(fetcher.short_jobs());
        // Short jobs: the free slots and the room ahead, less what waits.
        assert_eq!(fetcher.next(0, 0, false, false, now), fetch(64));
        assert_eq!(fetcher.next(16, 30, false, false, now), fetch(18));
        assert_eq!(fetcher.next(16, 48, false, false, now), Next::WaitForSlot);
        // A suspect waits until nothing runs and nothing waits; it is never fetched ahead.
        assert_eq!(fetcher.next(0, 3, false, true, now), Next::WaitForSlot);
        assert_eq!(
            fetcher.next(0, 0, false, true, now),
            Next::Fetch {
                limit: 1,
                suspects: true
            }
        );
        // Jobs grow longer than claims: free slots only again.
        for _ in 0..32 {
            fetcher.ran(ms(50));
        }
        assert!(!fetcher.short_jobs());
        assert_eq!(fetcher.next(4, 0, false, false, now), fetch(12));
        assert_eq!(fetcher.next(16, 20, false, false, now), Next::WaitForSlot);
        // A worker that may not fetch ahead never does.
        let mut never = Fetcher::new(16);
        never.fetched(16, 16, ms(4));
        never.ran(ms(0));
        assert!(!never.short_jobs());
        assert_eq!(
            suspect_wait(2, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_write_is_tried_again_until_a_lease_has_passed() {
        let mut persist = Persist::for_lease(Duration::from_millis(40));
        let mut pauses = Vec::new();
        while let Some(pause) = persist.again() {
            pauses.push(pause);
            std::thread::sleep(pause);
        }
        // 5, 10, 20 ms...: it gave up before the lease would have passed with the next pause.
        assert_eq!(pauses[..2], [5, 10].map(Duration::from_millis));
        assert!(pauses.iter().sum::<Duration>() < Duration::from_millis(40));
    }

    #[test]
    fn a_row_nothing_holds_is_an_orphan_at_the_second_look_and_a_lost_claim_is_given_back() {
        let in_flight = InFlight::default();
        let job = |id, token| Claimed {
            id,
            event_id: String::new(),
            handler: String::new(),
            payload: String::new(),
            attempt: 1,
            token,
            priority: 0,
            run_at: 0,
            created_at: 0,
        };
        in_flight.claiming(10);
        in_flight.claiming(30);
        in_flight.claimed(10, &[job(1, 10), job(2, 10)]);
        in_flight.lost(20);
        let keep = Duration::from_secs(60);
        let rows = [(1, 10, 1), (2, 10, 1), (3, 10, 2), (4, 20, 1), (5, 20, 1)];
        let first = in_flight.orphans(&rows, keep);
        assert_eq!(first.unclaim, [20]);
        assert!(
            first.fail.is_empty(),
            "job 3 may be a claim being registered"
        );
        in_flight.release(2);
        let second = in_flight.orphans(&rows, keep);
        let failed: Vec<(i64, u32)> = second.fail.iter().map(|j| (j.id, j.attempt)).collect();
        assert_eq!(failed, [(3, 2)], "job 2 was unheld once only");
        // A claim whose reply is not in yet holds its rows, however often maintenance looks.
        for _ in 0..3 {
            assert!(in_flight.orphans(&[(7, 30, 1)], keep).fail.is_empty());
        }
        // A row of another claim under the same id (retried, claimed again) is not held.
        in_flight.claimed(30, &[job(6, 30)]);
        assert!(in_flight.orphans(&[(6, 31, 1)], keep).fail.is_empty());
        assert_eq!(in_flight.orphans(&[(6, 31, 1)], keep).fail.len(), 1);
        // Lost tokens are forgotten after a while.
        assert!(in_flight
            .orphans(&[(4, 20, 1)], Duration::ZERO)
            .unclaim
            .is_empty());
    }

    #[test]
    fn a_worker_is_stale_only_after_its_counter_stood_still_for_its_lease() {
        let mut watch = StaleWatch::default();
        assert!(watch.observe(1, &[(1, 5, 0), (2, 7, 20)]).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        // Worker 2 renewed: not stale, whatever its clock says.
        assert!(watch.observe(1, &[(1, 5, 0), (2, 8, 20)]).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        // Looking every few ms (never held up itself), the watch judges worker 2 stale once it
        // stood still for longer than its lease; this process (1) is never stale to itself.
        let mut watch = StaleWatch::default();
        let rows = [(1, 5, 0), (2, 8, 40)];
        let start = Instant::now();
        assert!(watch.observe(1, &rows).is_empty());
        let stale = loop {
            std::thread::sleep(Duration::from_millis(2));
            let stale = watch.observe(1, &rows);
            if !stale.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break stale;
            }
        };
        assert_eq!(stale, [2]);
        assert!(start.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn a_watch_that_was_held_up_itself_judges_no_one_stale() {
        let mut watch = StaleWatch::default();
        assert!(watch.observe(1, &[(2, 8, 20)]).is_empty());
        // The watch waited 60 ms (a transaction held the write lock): worker 2 could not
        // renew either, so its wait starts again.
        std::thread::sleep(Duration::from_millis(60));
        assert!(watch.observe(1, &[(2, 8, 20)]).is_empty());
    }
}
