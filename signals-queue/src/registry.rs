//! The queued handlers (and publishing functions) linked into this program: the table
//! `#[on(S, queue)]` registers them in, and the selection a worker or relay claims for.

use crate::error::Error;
use crate::job::JobInfo;

/// Every queued handler linked into this program.
#[linkme::distributed_slice]
pub static SIGNALS_QUEUE_0_1_JOBS: [JobInfo];

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
    let claims: Vec<serde_json::Value> = names
        .iter()
        .map(|name| serde_json::json!({"name": name, "signal": every[name].signal_name()}))
        .collect();
    let claims = serde_json::to_string(&claims).expect("claims serialize");
    Ok((every, claims))
}
