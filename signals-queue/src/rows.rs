//! The rows one `notify` writes: one per queued (or publishing) handler of the signal whose
//! filter accepts, made at the first of them so that one statement writes them all.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;

use signals_core::{BoxError, Signal};
use uuid::Uuid;

use crate::clock::Clock;
use crate::job::{Handler, JobInfo, Row};
use crate::registry;

/// The job rows one `notify` writes, through whichever driver the context's transaction uses:
/// one per queued (or publishing) handler whose `when` filter accepts, all with one event id.
pub(crate) struct JobRows {
    pub(crate) event_id: Uuid,
    /// The signal's path, for the `signal` column.
    pub(crate) signal: &'static str,
    /// The writer's clock (`created_at` on SQLite; PostgreSQL's own clock writes it there).
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "sqlx-sqlite")),
        allow(dead_code)
    )]
    pub(crate) now: crate::clock::Millis,
    pub(crate) rows: Vec<(&'static JobInfo, Row)>,
}

impl JobRows {
    /// No rows yet, of a new `notify` of `S`: a new event id, the writer's clock.
    fn none<S: Signal>() -> JobRows {
        JobRows {
            event_id: Uuid::now_v7(),
            signal: signals_core::catalog().get::<S>().path(),
            now: Clock::system().now(),
            rows: Vec::new(),
        }
    }

    /// The row of `J` alone (if its filter accepts): what a publishing function writes while
    /// queued handlers run inline ([`testing::Inline`](crate::testing::Inline)).
    #[cfg(all(feature = "testing", feature = "sqlite"))]
    pub(crate) fn only<S: Signal, J: Handler<S>>(
        signal: &S,
        ctx: &S::Context<'_>,
    ) -> Result<JobRows, BoxError> {
        let mut rows = JobRows::none::<S>();
        if let Some(row) = J::JOB.row(signal, ctx)? {
            rows.rows.push((J::JOB, row));
        }
        Ok(rows)
    }

    /// The rows of a `notify` of `signal`, made at its first queued handler `J` (in run order)
    /// for every queued handler of `S`, so that one statement writes them all: the later ones'
    /// filters are asked then, and their own turn writes nothing. Empty for those.
    pub(crate) fn of<S: Signal, J: Handler<S>>(
        signal: &S,
        ctx: &S::Context<'_>,
    ) -> Result<JobRows, BoxError> {
        let mut rows = JobRows::none::<S>();
        let mut queued = signals_core::handlers::<S>().filter(|handler| handler.__writes_job());
        match queued.next() {
            Some(first) if first.__function() != J::JOB.function() => return Ok(rows),
            Some(first) => {
                for handler in std::iter::once(first).chain(queued) {
                    let job = job_of(TypeId::of::<S>(), handler.__function())
                        .ok_or("a queued handler is missing from the table of jobs")?;
                    if let Some(row) = job.row(signal, ctx)? {
                        rows.rows.push((job, row));
                    }
                }
            }
            // Not in the signal's table (it cannot happen): write this handler's own row.
            None => {
                if let Some(row) = J::JOB.row(signal, ctx)? {
                    rows.rows.push((J::JOB, row));
                }
            }
        }
        Ok(rows)
    }
}

/// Several rows as the SQLite `ENQUEUE_MANY` reads them: a JSON array of
/// `[handler, queue, priority, payload, max_attempts, delay_ms, coalesce_key]`.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "sqlx-sqlite")),
    allow(dead_code)
)]
pub(crate) fn rows_json(rows: &[(&'static JobInfo, Row)]) -> String {
    let rows: Vec<_> = rows
        .iter()
        .map(|(job, row)| {
            (
                job.name(),
                job.queue(),
                job.priority(),
                &row.payload,
                job.max_attempts(),
                job.delay().as_millis() as i64,
                &row.key,
            )
        })
        .collect();
    serde_json::to_string(&rows).expect("rows serialize")
}

/// The job of the queued handler `function` of the signal `signal`: a map built once.
fn job_of(signal: TypeId, function: TypeId) -> Option<&'static JobInfo> {
    static BY_HANDLER: OnceLock<HashMap<(TypeId, TypeId), &'static JobInfo>> = OnceLock::new();
    BY_HANDLER
        .get_or_init(|| {
            registry::jobs()
                .map(|job| ((job.signal_type(), job.function()), job))
                .collect()
        })
        .get(&(signal, function))
        .copied()
}
