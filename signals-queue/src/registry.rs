//! The queued handlers (and publishing functions) linked into this program: the table
//! `#[on(S, queue)]` registers them in, and the selection a worker or relay claims for.

use crate::error::Error;
use crate::job::JobInfo;
use crate::periodic::PeriodicInfo;

/// Every queued handler linked into this program.
#[linkme::distributed_slice]
pub static SIGNALS_QUEUE_0_1_JOBS: [JobInfo];

/// Every periodic signal linked into this program.
#[linkme::distributed_slice]
pub static SIGNALS_QUEUE_0_1_PERIODIC: [PeriodicInfo];

/// The periodic signals linked into this program.
pub(crate) fn periodic() -> impl Iterator<Item = &'static PeriodicInfo> {
    SIGNALS_QUEUE_0_1_PERIODIC.iter()
}

/// The periodic signals linked into this program that one kind of worker fires (`pick` takes
/// their way of firing, `None` for the other kind): how to fire each, and their schedules,
/// parsed, in one order.
pub(crate) fn linked_periodic<F>(
    pick: impl Fn(crate::periodic::FireKind) -> Option<F>,
) -> Result<(Vec<F>, crate::schedule::Ticker), Error> {
    let mut fires = Vec::new();
    let mut schedules = Vec::new();
    for signal in periodic() {
        let Some(fire) = pick(signal.fire()) else {
            continue;
        };
        let schedule =
            crate::schedule::Schedule::parse(signal.spec()).map_err(|message| Error::Schedule {
                signal: signal.path(),
                message,
            })?;
        fires.push(fire);
        schedules.push((signal.path(), schedule));
    }
    Ok((fires, crate::schedule::Ticker::new(schedules)))
}

/// The queued handlers linked into this program.
pub fn jobs() -> impl Iterator<Item = &'static JobInfo> {
    SIGNALS_QUEUE_0_1_JOBS.iter()
}

/// The queued handlers linked into this program that `keep` selects, by job name, and what the
/// statements that look for their jobs take: a JSON array of `{"name": job name, "signal":
/// signal type name}`. They match both, so a job another program wrote under the same name for
/// another signal is never taken (nor waited for).
pub(crate) type LinkedJobs = (
    std::collections::HashMap<&'static str, &'static JobInfo>,
    String,
);

/// The queues a worker runs with limits of their own (`.queue("email", 20)`), in the order
/// given: lane `i + 1` runs queue `i`'s handlers; lane 0 runs every other handler, with the
/// worker's `concurrency`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queues(Vec<(String, usize)>);

impl Queues {
    /// Runs `queue`'s handlers in `limit` slots of their own (a second call for one queue
    /// replaces its limit).
    pub(crate) fn set(&mut self, queue: String, limit: usize) {
        let limit = limit.max(1);
        match self.0.iter_mut().find(|(name, _)| *name == queue) {
            Some(lane) => lane.1 = limit,
            None => self.0.push((queue, limit)),
        }
    }

    /// The lane that runs `queue`'s handlers.
    fn lane_of(&self, queue: &str) -> usize {
        self.0
            .iter()
            .position(|(name, _)| name == queue)
            .map_or(0, |i| i + 1)
    }
}

/// A worker's lane: the handlers of some queues, run in slots of their own.
#[derive(Debug)]
pub(crate) struct Lane {
    /// How many of its jobs run at once.
    pub(crate) limit: usize,
    /// Its linked handlers (paused or not).
    jobs: Vec<&'static JobInfo>,
}

impl Lane {
    /// Whether any linked handler runs in it (a lane with none has no producer).
    pub(crate) fn is_used(&self) -> bool {
        !self.jobs.is_empty()
    }
}

/// The handlers a worker claims for, as the statements take them: the linked ones, less those
/// on queues an operator paused, for the whole worker and for each lane. Maintenance reads the
/// paused queues every tick and sets them here; each lane's producer reads its current list
/// for each claim.
#[doc(hidden)]
pub struct Claimable {
    lanes: Vec<Lane>,
    /// Every lane's list, then each lane's.
    current: std::sync::RwLock<(std::sync::Arc<str>, Vec<std::sync::Arc<str>>)>,
    paused: std::sync::Mutex<Vec<String>>,
}

impl Claimable {
    /// Every job of `jobs` claimable, in the lanes `queues` gives (the rest in lane 0, run
    /// with `concurrency`).
    pub(crate) fn new(
        jobs: &std::collections::HashMap<&'static str, &'static JobInfo>,
        concurrency: usize,
        queues: &Queues,
    ) -> Self {
        let mut lanes: Vec<Lane> = std::iter::once(concurrency)
            .chain(queues.0.iter().map(|(_, limit)| *limit))
            .map(|limit| Lane {
                limit,
                jobs: Vec::new(),
            })
            .collect();
        let mut sorted: Vec<&'static JobInfo> = jobs.values().copied().collect();
        sorted.sort_unstable_by_key(|job| job.name());
        for job in sorted {
            lanes[queues.lane_of(job.queue())].jobs.push(job);
        }
        for ((queue, _), lane) in queues.0.iter().zip(&lanes[1..]) {
            if !lane.is_used() {
                crate::trace::no_handler_in_queue(queue);
            }
        }
        let claimable = Claimable {
            lanes,
            current: std::sync::RwLock::new((std::sync::Arc::from("[]"), Vec::new())),
            paused: std::sync::Mutex::new(Vec::new()),
        };
        claimable.select(&[]);
        claimable
    }

    /// The worker's lanes, by index.
    pub(crate) fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    /// The handlers to claim for now, in every lane (a JSON array of `{"name", "signal"}`).
    pub(crate) fn json(&self) -> std::sync::Arc<str> {
        self.read().0.clone()
    }

    /// The handlers to claim for now in `lane`.
    pub(crate) fn lane(&self, lane: usize) -> std::sync::Arc<str> {
        self.read().1[lane].clone()
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, (std::sync::Arc<str>, Vec<std::sync::Arc<str>>)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queues paused now: the handlers of those are not claimed. Whether that changed.
    pub(crate) fn set_paused(&self, mut queues: Vec<String>) -> bool {
        queues.sort_unstable();
        let mut paused = self
            .paused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *paused == queues {
            return false;
        }
        self.select(&queues);
        *paused = queues;
        true
    }

    /// Takes every handler except those of the `paused` queues (sorted).
    fn select(&self, paused: &[String]) {
        let running = |job: &&&'static JobInfo| {
            paused
                .binary_search_by(|q| q.as_str().cmp(job.queue()))
                .is_err()
        };
        let all = claims_json(
            self.lanes
                .iter()
                .flat_map(|lane| lane.jobs.iter().filter(running).copied()),
        );
        let lanes = self
            .lanes
            .iter()
            .map(|lane| claims_json(lane.jobs.iter().filter(running).copied()).into())
            .collect();
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (all.into(), lanes);
    }
}

/// The JSON array of `{"name", "signal"}` the statements take.
fn claims_json<'a>(jobs: impl Iterator<Item = &'a JobInfo>) -> String {
    let claims: Vec<serde_json::Value> = jobs
        .map(|job| serde_json::json!({"name": job.name(), "signal": job.signal_name()}))
        .collect();
    serde_json::to_string(&claims).expect("claims serialize")
}

/// See [`LinkedJobs`]. Job names are unique across every kind (queued handlers of either
/// kind of signal, publishing functions): a worker claims by name, so two kinds sharing one
/// would take each other's jobs.
pub(crate) fn linked_jobs(keep: impl Fn(&JobInfo) -> bool) -> Result<LinkedJobs, Error> {
    let mut every: std::collections::HashMap<&'static str, &'static JobInfo> =
        std::collections::HashMap::new();
    for job in jobs() {
        if let Some(first) = every.insert(job.name(), job) {
            return Err(Error::DuplicateJobName {
                name: job.name(),
                first: first.location(),
                second: job.location(),
            });
        }
    }
    every.retain(|_, job| keep(job));
    let mut names: Vec<&str> = every.keys().copied().collect();
    names.sort_unstable();
    let claims = claims_json(names.iter().map(|name| every[name]));
    Ok((every, claims))
}
