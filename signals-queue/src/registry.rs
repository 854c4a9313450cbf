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

/// The handlers a worker claims for, as the statements take them: the linked ones, less those
/// on queues an operator paused. Maintenance reads the paused queues every tick and sets them
/// here; the producer reads the current list for each claim.
#[doc(hidden)]
pub struct Claimable {
    jobs: Vec<&'static JobInfo>,
    current: std::sync::RwLock<std::sync::Arc<str>>,
    paused: std::sync::Mutex<Vec<String>>,
}

impl Claimable {
    /// Every job of `jobs` claimable.
    pub(crate) fn new(jobs: &std::collections::HashMap<&'static str, &'static JobInfo>) -> Self {
        let mut jobs: Vec<&'static JobInfo> = jobs.values().copied().collect();
        jobs.sort_unstable_by_key(|job| job.name());
        let current = claims_json(jobs.iter().copied());
        Claimable {
            jobs,
            current: std::sync::RwLock::new(current.into()),
            paused: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The handlers to claim for now (a JSON array of `{"name", "signal"}`).
    pub(crate) fn json(&self) -> std::sync::Arc<str> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
        let claimable = self.jobs.iter().copied().filter(|job| {
            queues
                .binary_search_by(|q| q.as_str().cmp(job.queue()))
                .is_err()
        });
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = claims_json(claimable).into();
        *paused = queues;
        true
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
