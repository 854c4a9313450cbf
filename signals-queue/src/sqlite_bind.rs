//! Each SQLite statement with its arguments, and the reading of its rows, written once for both
//! drivers: rusqlite runs them in [`sqlite`](crate::sqlite) (the sync path), sqlx in
//! [`store`](crate::store) (the async path). A driver only turns an [`Arg`] into its own
//! binding and a result row into a [`Row`]; what a statement binds, in which order, and how
//! its rows read lives here.

use std::borrow::Cow;
use std::time::Duration;

use crate::clock::Millis;
use crate::job::{DeadJobRow, StatRow};
use crate::lifecycle::{self, ClaimRequest, Claimed, Failure};
use crate::ops::Selection;
use crate::rows::{rows_json, JobRows};
use crate::sqlite_sql as sql;
use crate::timing::RetryPolicy;

/// A value a statement binds: SQLite's integers and text (booleans are integers).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(Cow<'a, str>),
    Null,
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl From<i32> for Arg<'_> {
    fn from(value: i32) -> Self {
        Arg::Int(value.into())
    }
}

impl From<u32> for Arg<'_> {
    fn from(value: u32) -> Self {
        Arg::Int(value.into())
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Int(value.into())
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(Cow::Borrowed(value))
    }
}

impl From<String> for Arg<'_> {
    fn from(value: String) -> Self {
        Arg::Text(Cow::Owned(value))
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Arg::Null, Into::into)
    }
}

/// One statement and its arguments, in order.
#[derive(Debug)]
pub(crate) struct Bound<'a> {
    pub(crate) sql: &'static str,
    pub(crate) args: Vec<Arg<'a>>,
}

/// `bound!(SQL, a, b, …)`: the statement `SQL` binding `a`, `b`, … as `?1`, `?2`, ….
macro_rules! bound {
    ($sql:expr $(, $arg:expr)* $(,)?) => {
        Bound { sql: $sql, args: vec![$(Arg::from($arg)),*] }
    };
}

/// A result row, whichever driver read it: its columns by index.
pub(crate) trait Row {
    type Error;
    fn int(&self, column: usize) -> Result<i64, Self::Error>;
    fn int_or_null(&self, column: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, column: usize) -> Result<String, Self::Error>;
    fn text_or_null(&self, column: usize) -> Result<Option<String>, Self::Error>;
}

/// The time a statement binds: the manual clock's, or this process's (SQLite has no clock
/// that every process on a file agrees with: each statement is given the writer's).
pub(crate) fn local(now: Option<Millis>) -> Millis {
    now.unwrap_or_else(|| crate::clock::Clock::system().now())
}

/// The jobs of one `notify`, in one statement.
pub(crate) fn enqueue(rows: &JobRows) -> Bound<'_> {
    let event_id = rows.event_id.to_string();
    let coalescing = rows.rows.iter().any(|(_, row)| row.key.is_some());
    match rows.rows.as_slice() {
        many if coalescing => bound!(
            sql::ENQUEUE_COALESCING,
            event_id,
            rows.signal,
            rows_json(many),
            rows.now
        ),
        [(job, row)] => bound!(
            sql::ENQUEUE,
            event_id,
            rows.signal,
            job.name(),
            job.queue(),
            job.priority(),
            row.payload.as_str(),
            job.max_attempts(),
            rows.now,
            job.delay().as_millis() as i64,
        ),
        many => bound!(
            sql::ENQUEUE_MANY,
            event_id,
            rows.signal,
            rows_json(many),
            rows.now
        ),
    }
}

/// [`sql::CLAIM`] or [`sql::CLAIM_SUSPECT`]; its rows read with [`claimed`].
pub(crate) fn claim<'a>(request: &ClaimRequest<'a>) -> Bound<'a> {
    let claim = match request.suspects {
        true => sql::CLAIM_SUSPECT,
        false => sql::CLAIM,
    };
    bound!(
        claim,
        local(request.now),
        request.handlers,
        request.suspects,
        request.limit as i64,
        request.token,
        request.worker,
        lifecycle::worker_label(),
    )
}

/// A row of [`claim`], claimed with `token`.
pub(crate) fn claimed<E>(row: &dyn Row<Error = E>, token: i64) -> Result<Claimed, E> {
    Ok(Claimed {
        id: row.int(0)?,
        event_id: row.text(1)?,
        handler: row.text(2)?,
        payload: row.text(3)?,
        attempt: row.int(4)?.max(0) as u32,
        token,
        priority: row.int(5)? as i32,
        run_at: row.int(6)?,
        created_at: row.int(7)?,
    })
}

/// [`sql::RUNNABLE`]: one row, whether a job of `handlers` is runnable now.
#[cfg(feature = "sqlite")]
pub(crate) fn runnable(handlers: &str, now: Option<Millis>) -> Bound<'_> {
    bound!(sql::RUNNABLE, local(now), handlers)
}

/// [`sql::UNCLAIM`]: the claim `token`'s jobs runnable again.
#[cfg(feature = "sqlx-sqlite")]
pub(crate) fn unclaim(token: i64) -> Bound<'static> {
    bound!(sql::UNCLAIM, token)
}

/// [`sql::GIVE_BACK`]: the unstarted jobs of these `(id, token)` claims runnable again.
#[cfg(feature = "sqlx-sqlite")]
pub(crate) fn give_back(jobs: &[(i64, i64)]) -> Bound<'static> {
    bound!(sql::GIVE_BACK, lifecycle::completions_json(jobs))
}

/// [`sql::COMPLETE`]; one row changed if the claim held the job (then [`count_one`]).
pub(crate) fn complete(job: &Claimed, now: Option<Millis>) -> Bound<'static> {
    bound!(sql::COMPLETE, local(now), job.id, job.token)
}

/// [`sql::COUNT_ONE`]: one more done job of `handler`.
pub(crate) fn count_one(handler: &str) -> Bound<'_> {
    bound!(sql::COUNT_ONE, handler)
}

/// [`sql::COMPLETE_MANY`] of the `(id, token)` pairs; its rows are the completed jobs'
/// handlers (then [`count_done`] of them, in the same transaction).
pub(crate) fn complete_many(done: &[(i64, i64)], now: Option<Millis>) -> Bound<'static> {
    bound!(
        sql::COMPLETE_MANY,
        local(now),
        lifecycle::completions_json(done)
    )
}

/// [`sql::COUNT_DONE`] of these handlers, each `sign` (1: completed, -1: purged); `None` when
/// there is nothing to count.
pub(crate) fn count_done<'a>(
    handlers: impl IntoIterator<Item = &'a String>,
    sign: i64,
) -> Option<Bound<'static>> {
    let counts = lifecycle::count_by_handler(handlers, sign);
    let shard = if sign < 0 { -1 } else { 0 };
    (!counts.is_empty()).then(|| bound!(sql::COUNT_DONE, lifecycle::counts_json(&counts), shard))
}

/// [`sql::FAIL`]; one row changed if the claim held the job.
pub(crate) fn fail<'a>(job: &Claimed, failure: &Failure<'a>) -> Bound<'a> {
    bound!(
        sql::FAIL,
        failure.permanent,
        local(failure.now),
        failure.delay_ms,
        failure.error,
        job.id,
        job.token,
        failure.dead_after_ms,
        failure.verdict.as_str(),
    )
}

/// [`sql::FAIL_MANY`] of the JSON `[id, token, delay ms, error]` items.
#[cfg(feature = "sqlx-sqlite")]
pub(crate) fn fail_many(
    items: String,
    dead_after_ms: Option<i64>,
    now: Option<Millis>,
) -> Bound<'static> {
    bound!(sql::FAIL_MANY, local(now), items, dead_after_ms)
}

/// [`sql::RUNNING_OF`] worker `worker`; its rows read with [`running`].
pub(crate) fn running_of(worker: i64) -> Bound<'static> {
    bound!(sql::RUNNING_OF, worker)
}

/// A row of [`running_of`]: (id, token, attempt).
pub(crate) fn running<E>(row: &dyn Row<Error = E>) -> Result<(i64, i64, i32), E> {
    Ok((row.int(0)?, row.int(1)?, row.int(2)? as i32))
}

/// [`sql::HEARTBEAT`]: worker `worker`'s lease renewed for `lease`.
pub(crate) fn heartbeat(worker: i64, lease: Duration, now: Option<Millis>) -> Bound<'static> {
    bound!(
        sql::HEARTBEAT,
        worker,
        local(now),
        lease.as_millis() as i64,
        lifecycle::worker_label(),
    )
}

/// [`sql::RETIRE`] worker `worker`.
pub(crate) fn retire(worker: i64) -> Bound<'static> {
    bound!(sql::RETIRE, worker)
}

/// [`sql::WORKERS`]; its rows read with [`worker`].
pub(crate) fn workers() -> Bound<'static> {
    bound!(sql::WORKERS)
}

/// A row of [`workers`]: (id, beats, lease ms), for a [`StaleWatch`](lifecycle::StaleWatch).
pub(crate) fn worker<E>(row: &dyn Row<Error = E>) -> Result<(i64, i64, i64), E> {
    Ok((row.int(0)?, row.int(1)?, row.int(2)?))
}

/// [`sql::RESCUE`] of the jobs of the `stale` workers (a JSON array), then
/// [`prune_workers`] of them: in one write transaction, with the [`workers`] read that judged
/// them.
pub(crate) fn rescue<'a>(stale: &'a str, retry: &RetryPolicy, now: Option<Millis>) -> Bound<'a> {
    bound!(
        sql::RESCUE,
        local(now),
        retry.base.as_millis() as i64,
        retry.cap.as_millis() as i64,
        lifecycle::RESCUED,
        stale,
    )
}

/// [`sql::PRUNE_WORKERS`]: the `stale` workers forgotten.
pub(crate) fn prune_workers(stale: &str) -> Bound<'_> {
    bound!(sql::PRUNE_WORKERS, stale)
}

/// The stale workers a watch picked, as [`rescue`] and [`prune_workers`] take them.
pub(crate) fn stale_json(stale: &[i64]) -> String {
    serde_json::to_string(stale).expect("ids serialize")
}

/// [`sql::RESERVE_SUSPECT`]; one row changed if `worker` holds a suspect.
pub(crate) fn reserve_suspect(
    handlers: &str,
    worker: i64,
    wait: Duration,
    now: Option<Millis>,
) -> Bound<'_> {
    bound!(
        sql::RESERVE_SUSPECT,
        local(now),
        handlers,
        worker,
        wait.as_millis() as i64
    )
}

/// [`sql::RETRY_DEAD`] of `handler` (every handler's if `None`).
pub(crate) fn retry_dead(handler: Option<&str>, now: Option<Millis>) -> Bound<'_> {
    bound!(sql::RETRY_DEAD, local(now), handler)
}

/// [`sql::PURGE_DONE`] before `before`; its rows are [`text_or_null`] (then [`count_done`] of
/// them, -1, in the same transaction).
pub(crate) fn purge_done(before: Millis) -> Bound<'static> {
    bound!(sql::PURGE_DONE, before)
}

/// [`sql::OUTBOX_BACKLOG`] of the publishing functions `handlers`; one row, read with
/// [`backlog`].
#[cfg(feature = "sqlx-sqlite")]
pub(crate) fn outbox_backlog(handlers: &str, now: Option<Millis>) -> Bound<'_> {
    bound!(sql::OUTBOX_BACKLOG, handlers, local(now))
}

/// A row of [`outbox_backlog`]: (how many, the oldest's due time).
#[cfg(feature = "sqlx-sqlite")]
pub(crate) fn backlog<E>(row: &dyn Row<Error = E>) -> Result<(i64, Option<i64>), E> {
    Ok((row.int(0)?, row.int_or_null(1)?))
}

/// [`sql::BUSY`]: one row, 1 while a job of `handlers` is pending or running.
pub(crate) fn busy(handlers: &str, now: Option<Millis>) -> Bound<'_> {
    bound!(sql::BUSY, handlers, local(now))
}

/// [`sql::STATS`]; its rows read with [`stat`].
pub(crate) fn stats() -> Bound<'static> {
    bound!(sql::STATS)
}

/// A row of [`stats`]: (handler, state, count, oldest creation time).
pub(crate) fn stat<E>(row: &dyn Row<Error = E>) -> Result<StatRow, E> {
    Ok((row.text(0)?, row.text(1)?, row.int(2)?, row.int_or_null(3)?))
}

/// [`sql::DEAD_JOBS`] after the id `after`; its rows read with [`dead_job`].
pub(crate) fn dead_jobs(after: i64, limit: u32) -> Bound<'static> {
    bound!(sql::DEAD_JOBS, after, limit)
}

/// A row of [`dead_jobs`]: (id, handler, attempt, last error, payload).
pub(crate) fn dead_job<E>(row: &dyn Row<Error = E>) -> Result<DeadJobRow, E> {
    Ok((
        row.int(0)?,
        row.text(1)?,
        row.int(2)? as i32,
        row.text_or_null(3)?,
        row.text(4)?,
    ))
}

/// [`sql::WAITING_OF_SIGNAL`] of the signal `name`; its rows read with [`waiting`].
#[cfg(feature = "testing")]
pub(crate) fn waiting_of_signal(name: &str) -> Bound<'_> {
    bound!(sql::WAITING_OF_SIGNAL, name)
}

/// A row of [`waiting_of_signal`]: (id, handler, queue, payload, event id).
#[cfg(feature = "testing")]
pub(crate) fn waiting<E>(row: &dyn Row<Error = E>) -> Result<crate::job::WaitingRow, E> {
    Ok((
        row.int(0)?,
        row.text(1)?,
        row.text(2)?,
        row.text(3)?,
        row.text(4)?,
    ))
}

/// `sql` (one of `sqlite_ops`' listings, chunks and actions) over `selection`.
pub(crate) fn selected<'a>(sql: &'static str, selection: &'a Selection<'a>) -> Bound<'a> {
    bound!(
        sql,
        local(selection.now),
        selection.after,
        selection.ids.as_deref(),
        selection.filter.handler.as_deref(),
        selection.filter.queue.as_deref(),
        selection.filter.state.map(|state| state.as_str()),
        selection.limit,
    )
}

/// A listed job: (id, handler, queue, word, attempt, max attempts, due at, last error).
pub(crate) fn listed<E>(row: &dyn Row<Error = E>) -> Result<crate::ops::ListedRow, E> {
    Ok((
        row.int(0)?,
        row.text(1)?,
        row.text(2)?,
        row.text(3)?,
        row.int(4)?,
        row.int(5)?,
        row.int(6)?,
        row.text_or_null(7)?,
    ))
}

/// One job with its payload and attempts.
pub(crate) fn job(now: Option<Millis>, id: i64) -> Bound<'static> {
    bound!(crate::sqlite_ops::JOB, local(now), id)
}

/// A row of [`job`]: the listed columns, the payload and the attempts' JSON.
pub(crate) fn job_detail<E>(row: &dyn Row<Error = E>) -> Result<crate::ops::JobDetail, E> {
    Ok(crate::ops::JobDetail::from_row(
        listed(row)?,
        row.text(8)?,
        row.text_or_null(9)?,
        crate::ops::LastClaim {
            started_at: row.int_or_null(10)?,
            finished_at: row.int_or_null(11)?,
            worker: row.text_or_null(12)?,
        },
    ))
}

/// The counts by queue, handler and word at `now`.
pub(crate) fn overview(now: Option<Millis>) -> Bound<'static> {
    bound!(crate::sqlite_ops::OVERVIEW, local(now))
}

/// A row of [`overview`]: (queue, handler, word, count, oldest due time).
pub(crate) fn overview_row<E>(row: &dyn Row<Error = E>) -> Result<crate::ops::OverviewRow, E> {
    Ok((
        row.text(0)?,
        row.text(1)?,
        row.text(2)?,
        row.int(3)?,
        row.int_or_null(4)?,
    ))
}

/// The queues an operator paused or resumed.
pub(crate) fn queues() -> Bound<'static> {
    bound!(crate::sqlite_ops::QUEUES)
}

/// A row of [`queues`]: (name, paused).
pub(crate) fn queue_row<E>(row: &dyn Row<Error = E>) -> Result<(String, bool), E> {
    Ok((row.text(0)?, row.int(1)? != 0))
}

/// Pauses or resumes `queue`.
pub(crate) fn set_paused(queue: &str, paused: bool, now: Option<Millis>) -> Bound<'_> {
    bound!(crate::sqlite_ops::SET_PAUSED, queue, paused, local(now))
}

/// Records a handler a worker runs.
pub(crate) fn record_handler(job: &crate::job::JobInfo, now: Option<Millis>) -> Bound<'static> {
    bound!(
        crate::sqlite_ops::RECORD_HANDLER,
        job.name(),
        job.signal_path(),
        job.queue(),
        job.max_attempts(),
        job.kind(),
        local(now),
    )
}

/// Of the jobs `ids` (a JSON array), those an operator cancelled.
pub(crate) fn cancelled_of(ids: String) -> Bound<'static> {
    bound!(crate::sqlite_ops::CANCELLED_OF, ids)
}

/// Up to 10,000 dead, discarded and cancelled jobs that finished before `before`.
pub(crate) fn purge_finished(before: Millis) -> Bound<'static> {
    bound!(crate::sqlite_ops::PURGE_FINISHED, before)
}

/// Takes or renews the leadership for `worker`, for `lease_ms` from `now`.
pub(crate) fn elect(worker: i64, lease_ms: i64, now: Option<Millis>) -> Bound<'static> {
    bound!(crate::sqlite_ops::ELECT, worker, lease_ms, local(now))
}

/// Up to 10,000 ticks recorded before `before`, each signal's latest kept.
pub(crate) fn prune_ticks(before: Millis) -> Bound<'static> {
    bound!(crate::sqlite_ops::PRUNE_TICKS, before)
}

/// Up to 100 dead jobs whose death was not announced.
pub(crate) fn unannounced() -> Bound<'static> {
    bound!(crate::sqlite_ops::UNANNOUNCED)
}

/// A row of [`unannounced`].
pub(crate) fn death<E>(row: &dyn Row<Error = E>) -> Result<crate::job::DeathRow, E> {
    Ok((
        row.int(0)?,
        row.text(1)?,
        row.text(2)?,
        row.int(3)? as i32,
        row.text_or_null(4)?,
        row.int(5)?,
    ))
}

/// Marks the death of `id` (finished at `finished_at`) announced.
pub(crate) fn announce(id: i64, finished_at: Millis) -> Bound<'static> {
    bound!(crate::sqlite_ops::ANNOUNCE, id, finished_at)
}

/// Gives the leadership up.
pub(crate) fn resign(worker: i64) -> Bound<'static> {
    bound!(crate::sqlite_ops::RESIGN, worker)
}

/// The latest tick of `signal` that fired.
pub(crate) fn last_tick(signal: &str) -> Bound<'_> {
    bound!(crate::sqlite_ops::LAST_TICK, signal)
}

/// Records the tick `tick` of `signal`, unless it or a later one was.
pub(crate) fn tick(signal: &str, tick: Millis, worker: i64, now: Option<Millis>) -> Bound<'_> {
    bound!(crate::sqlite_ops::TICK, signal, tick, worker, local(now))
}

/// The first column, an integer (a count, a flag).
pub(crate) fn int<E>(row: &dyn Row<Error = E>) -> Result<i64, E> {
    row.int(0)
}

/// The first column, an integer or `NULL` (a schema version).
pub(crate) fn int_or_null<E>(row: &dyn Row<Error = E>) -> Result<Option<i64>, E> {
    row.int_or_null(0)
}

/// The first column, text.
pub(crate) fn text<E>(row: &dyn Row<Error = E>) -> Result<String, E> {
    row.text(0)
}

/// The first column, text or `NULL`.
pub(crate) fn text_or_null<E>(row: &dyn Row<Error = E>) -> Result<Option<String>, E> {
    row.text_or_null(0)
}

/// The statements that read a file's schema, in the order [`schema`] asks them.
pub(crate) mod schema {
    use super::{Arg, Bound};
    use crate::sqlite_sql as sql;

    /// Whether the schema table exists.
    pub(crate) fn exists() -> Bound<'static> {
        bound!(sql::HAS_SCHEMA)
    }

    /// The level (`NULL` before the first migration).
    pub(crate) fn level() -> Bound<'static> {
        bound!(sql::VERSION)
    }

    /// Whether the migrations table exists.
    pub(crate) fn has_migrations() -> Bound<'static> {
        bound!(sql::HAS_MIGRATIONS)
    }

    /// The newest migration.
    pub(crate) fn applied() -> Bound<'static> {
        bound!(sql::APPLIED)
    }

    /// Whether `table` has `column`.
    pub(crate) fn has_column<'a>(table: &'a str, column: &'a str) -> Bound<'a> {
        bound!(sql::HAS_COLUMN, table, column)
    }

    /// Records the level `level`.
    pub(crate) fn set_level(level: i64) -> Bound<'static> {
        bound!(sql::SET_VERSION, level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_statement_binds_as_many_arguments_as_its_text_numbers() {
        let request = ClaimRequest {
            handlers: "[]",
            limit: 3,
            suspects: true,
            worker: 7,
            now: Some(10),
            token: 9,
        };
        let job = Claimed {
            id: 1,
            event_id: String::new(),
            handler: "h".into(),
            payload: "{}".into(),
            attempt: 1,
            token: 9,
            priority: 0,
            run_at: 0,
            created_at: 0,
        };
        let failure = Failure {
            permanent: false,
            delay_ms: 5,
            error: "e",
            dead_after_ms: None,
            now: Some(10),
            verdict: crate::lifecycle::Verdict::Fail,
        };
        let retry = RetryPolicy::default();
        let lease = Duration::from_secs(1);
        let statements = [
            claim(&request),
            #[cfg(feature = "sqlite")]
            runnable("[]", None),
            #[cfg(feature = "sqlx-sqlite")]
            unclaim(9),
            complete(&job, None),
            count_one("h"),
            complete_many(&[(1, 9)], None),
            count_done(&["h".to_owned()], 1).unwrap(),
            fail(&job, &failure),
            #[cfg(feature = "sqlx-sqlite")]
            fail_many("[]".into(), None, None),
            running_of(7),
            heartbeat(7, lease, None),
            retire(7),
            workers(),
            rescue("[]", &retry, None),
            prune_workers("[]"),
            reserve_suspect("[]", 7, lease, None),
            retry_dead(None, None),
            purge_done(0),
            busy("[]", None),
            stats(),
            dead_jobs(0, 10),
            schema::has_column("t", "x"),
            schema::set_level(3),
        ];
        for statement in statements {
            let highest = (1..=20)
                .rev()
                .find(|n| statement.sql.contains(&format!("?{n}")))
                .unwrap_or(0);
            assert_eq!(
                statement.args.len(),
                highest,
                "arguments of {}",
                statement.sql
            );
        }
    }
}
