//! The jobs table on SQLite through rusqlite (feature `sqlite`): the sync path's store, running
//! the statements of [`sqlite_bind`](crate::sqlite_bind) (which the async path's sqlx store
//! runs too).

use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection};

use crate::clock::Millis;
use crate::error::Error;
use crate::job::{DeadJobRow, StatRow};
use crate::lifecycle::{self, ClaimRequest, Claimed, Failure, StaleWatch};
use crate::ops::{Action, JobDetail, ListedRow, OverviewRows, Selection};
use crate::rows::JobRows;
use crate::sqlite_bind::{self as bind, Arg, Bound, Row};
use crate::timing::RetryPolicy;

pub(crate) use crate::sqlite_ops::*;
pub(crate) use crate::sqlite_sql::*;

/// Opens a connection for the queue: WAL (readers never block the writer), a busy timeout, and
/// `synchronous = NORMAL` (durable across process crashes; WAL's default trade-off).
pub(crate) fn open(path: &std::path::Path, busy_timeout: Duration) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    wal(&conn)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Puts the database in WAL mode unless it is already (the mode is stored in the file). The
/// switch needs the database to itself: [`migrate`] does it, before other processes open it;
/// a database already in WAL is left alone, so that opening it never waits on writers.
fn wal(conn: &Connection) -> Result<(), Error> {
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    Ok(())
}

/// Creates the jobs table if it does not exist, and checks its version. Puts the database in WAL
/// mode (readers never wait for the writer), which the file remembers: run it before other
/// processes use the database, as an application runs its migrations.
///
/// # Errors
///
/// [`Error::SchemaTooNew`] if a newer version of this crate wrote the table; any database
/// error.
pub fn migrate(conn: &Connection) -> Result<(), Error> {
    wal(conn)?;
    // A read first: in WAL it never waits for a writer, so a current schema takes no lock.
    let (level, applied) = schema(conn)?;
    if is_current(level, applied)? {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = migrate_in_transaction(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end)?;
    result
}

/// The file's level and newest migration (see [`is_current`]).
fn schema(conn: &Connection) -> rusqlite::Result<(Option<i64>, Option<i64>)> {
    if query_one(conn, bind::schema::exists(), bind::int)? == 0 {
        return Ok((None, None));
    }
    let level = query_one(conn, bind::schema::level(), bind::int_or_null)?;
    let applied = match query_one(conn, bind::schema::has_migrations(), bind::int)? {
        0 => None,
        _ => query_one(conn, bind::schema::applied(), bind::int_or_null)?,
    };
    Ok((level, applied))
}

/// Checks, reading only, that the schema is one this release works with: what a worker does at
/// `build()` in place of migrating.
pub(crate) fn check_schema(conn: &Connection) -> Result<(), Error> {
    let (level, applied) = schema(conn)?;
    match is_current(level, applied)? {
        true => Ok(()),
        false => Err(outdated(level, applied)),
    }
}

/// Creates the tables, or brings older ones up to date in place, under the write lock.
fn migrate_in_transaction(conn: &Connection) -> Result<(), Error> {
    let (level, applied) = schema(conn)?;
    if is_current(level, applied)? {
        return Ok(()); // another process migrated meanwhile
    }
    conn.execute_batch(SCHEMA)?;
    for (table, column, add) in ADDED_COLUMNS {
        if query_one(conn, bind::schema::has_column(table, column), bind::int)? == 0 {
            conn.execute(add, [])?;
        }
    }
    conn.execute_batch(INDEXES)?;
    conn.execute_batch(FOLD)?;
    if level.is_none_or(|level| level < COMPATIBLE_FROM) {
        execute(conn, bind::schema::set_level(COMPATIBLE_FROM))?;
    }
    conn.execute_batch(MIGRATED)?;
    Ok(())
}

/// Binds an [`Arg`] as rusqlite does its own values.
impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Arg::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Arg::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl Row for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, column: usize) -> rusqlite::Result<i64> {
        self.get(column)
    }
    fn int_or_null(&self, column: usize) -> rusqlite::Result<Option<i64>> {
        self.get(column)
    }
    fn text(&self, column: usize) -> rusqlite::Result<String> {
        self.get(column)
    }
    fn text_or_null(&self, column: usize) -> rusqlite::Result<Option<String>> {
        self.get(column)
    }
}

/// Runs `statement` (prepared once per connection); how many rows it changed.
pub(crate) fn execute(conn: &Connection, statement: Bound<'_>) -> rusqlite::Result<usize> {
    conn.prepare_cached(statement.sql)?
        .execute(params_from_iter(&statement.args))
}

/// Runs `statement` and reads each of its rows with `read`.
pub(crate) fn query<T>(
    conn: &Connection,
    statement: Bound<'_>,
    read: impl Fn(&dyn Row<Error = rusqlite::Error>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    conn.prepare_cached(statement.sql)?
        .query_map(params_from_iter(&statement.args), |row| read(row))?
        .collect()
}

/// Runs `statement` and reads its one row with `read`.
pub(crate) fn query_one<T>(
    conn: &Connection,
    statement: Bound<'_>,
    read: impl FnOnce(&dyn Row<Error = rusqlite::Error>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(statement.sql)?
        .query_row(params_from_iter(&statement.args), |row| read(row))
}

/// Writes the jobs of one `notify` in the caller's transaction: one statement.
pub(crate) fn enqueue(conn: &Connection, rows: &JobRows) -> rusqlite::Result<()> {
    execute(conn, bind::enqueue(rows)).map(drop)
}

/// Claims up to `request.limit` runnable jobs, in claim order; charges their attempts.
pub(crate) fn claim(
    conn: &Connection,
    request: &ClaimRequest<'_>,
) -> rusqlite::Result<Vec<Claimed>> {
    let token = request.token;
    let mut claimed = query(conn, bind::claim(request), |row| bind::claimed(row, token))?;
    lifecycle::claim_order(&mut claimed);
    Ok(claimed)
}

/// Marks the job done in the handler's transaction; `false` if its claim no longer holds it.
pub(crate) fn complete(
    conn: &Connection,
    job: &Claimed,
    now: Option<Millis>,
) -> rusqlite::Result<bool> {
    let changed = execute(conn, bind::complete(job, now))?;
    if changed == 1 {
        execute(conn, bind::count_one(&job.handler))?;
    }
    Ok(changed == 1)
}

/// Marks done the jobs of `done`'s `(id, token)` pairs their claims still hold, and counts
/// them, in one transaction; their handlers.
pub(crate) fn complete_many(
    conn: &Connection,
    done: &[(i64, i64)],
    now: Option<Millis>,
) -> rusqlite::Result<Vec<String>> {
    let tx = conn.unchecked_transaction()?;
    let handlers = query(&tx, bind::complete_many(done, now), bind::text)?;
    if let Some(count) = bind::count_done(&handlers, 1) {
        execute(&tx, count)?;
    }
    tx.commit()?;
    Ok(handlers)
}

/// Records a failed attempt: pending again after the backoff, or dead; `false` if the claim
/// no longer holds the job.
pub(crate) fn fail(
    conn: &Connection,
    job: &Claimed,
    failure: &Failure<'_>,
) -> rusqlite::Result<bool> {
    Ok(execute(conn, bind::fail(job, failure))? == 1)
}

/// The jobs running under worker `worker`: (id, token, attempt).
pub(crate) fn running_of(conn: &Connection, worker: i64) -> rusqlite::Result<Vec<(i64, i64, i32)>> {
    query(conn, bind::running_of(worker), bind::running)
}

/// Renews worker `worker`'s lease: one row, whose counter moves.
pub(crate) fn heartbeat(
    conn: &Connection,
    worker: i64,
    lease: Duration,
    now: Option<Millis>,
) -> rusqlite::Result<()> {
    execute(conn, bind::heartbeat(worker, lease, now)).map(drop)
}

/// Forgets a worker that stopped.
pub(crate) fn retire(conn: &Connection, worker: i64) -> rusqlite::Result<()> {
    execute(conn, bind::retire(worker)).map(drop)
}

/// Returns the jobs of workers `watch` judges stale (and of workers that left no row) to the
/// queue, suspects from now on, and forgets those workers; how many jobs.
pub(crate) fn rescue(
    conn: &Connection,
    me: i64,
    watch: &mut StaleWatch,
    retry: &RetryPolicy,
    now: Option<Millis>,
) -> rusqlite::Result<usize> {
    // Under the write lock: the counters read are the ones the rescue acts on, and a watch held
    // up behind another transaction sees that it was. Rolled back on drop, whatever fails (a
    // transaction left open would refuse every later `BEGIN`).
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let workers = query(&tx, bind::workers(), bind::worker)?;
    let stale = bind::stale_json(&watch.observe(me, &workers));
    let rescued = execute(&tx, bind::rescue(&stale, retry, now))?;
    execute(&tx, bind::prune_workers(&stale))?;
    tx.commit()?;
    Ok(rescued)
}

/// Reserves a due suspect of `handlers` for `worker` (see [`RESERVE_SUSPECT`]): whether it
/// holds one, to run alone.
pub(crate) fn reserve_suspect(
    conn: &Connection,
    handlers: &str,
    worker: i64,
    wait: Duration,
    now: Option<Millis>,
) -> rusqlite::Result<bool> {
    Ok(execute(conn, bind::reserve_suspect(handlers, worker, wait, now))? > 0)
}

/// Whether a job of `handlers` is runnable now; a read that never waits for a writer.
pub(crate) fn runnable(
    conn: &Connection,
    handlers: &str,
    now: Option<Millis>,
) -> rusqlite::Result<bool> {
    Ok(query_one(conn, bind::runnable(handlers, now), bind::int)? != 0)
}

/// 1 while a job of `handlers` is pending or running, else 0.
pub(crate) fn busy(
    conn: &Connection,
    handlers: &str,
    now: Option<Millis>,
) -> rusqlite::Result<i64> {
    query_one(conn, bind::busy(handlers, now), bind::int)
}

/// Every dead job (of `handler`, if given) pending again, attempts reset; how many.
pub(crate) fn retry_dead(
    conn: &Connection,
    handler: Option<&str>,
    now: Option<Millis>,
) -> rusqlite::Result<usize> {
    execute(conn, bind::retry_dead(handler, now))
}

/// Deletes done jobs that finished before `before`, a batch per transaction that also takes
/// them off the done counts; how many.
pub(crate) fn purge_done(conn: &Connection, before: Millis) -> rusqlite::Result<usize> {
    let mut purged = 0;
    loop {
        let deleted = purge_done_batch(conn, before)?;
        purged += deleted;
        if (deleted as u64) < PURGE_BATCH {
            return Ok(purged);
        }
    }
}

/// Deletes up to 10,000 done jobs that finished before `before`, taking them off the done
/// counts in the same transaction; how many.
pub(crate) fn purge_done_batch(conn: &Connection, before: Millis) -> rusqlite::Result<usize> {
    let tx = conn.unchecked_transaction()?;
    let handlers = query(&tx, bind::purge_done(before), bind::text_or_null)?;
    if let Some(count) = bind::count_done(handlers.iter().flatten(), -1) {
        execute(&tx, count)?;
    }
    tx.commit()?;
    Ok(handlers.len())
}

/// The waiting jobs of the signal `name`: (id, handler, queue, payload, event id).
#[cfg(feature = "testing")]
pub(crate) fn waiting_of_signal(
    conn: &Connection,
    name: &str,
) -> rusqlite::Result<Vec<crate::job::WaitingRow>> {
    query(conn, bind::waiting_of_signal(name), bind::waiting)
}

/// Records the handlers a worker runs, for tools that link none of them.
pub(crate) fn record_handlers(
    conn: &Connection,
    jobs: &[&'static crate::job::JobInfo],
    now: Option<Millis>,
) -> rusqlite::Result<()> {
    for job in jobs {
        execute(conn, bind::record_handler(job, now))?;
    }
    Ok(())
}

/// Takes or renews the fleet's leadership for `worker`: the time it was judged at when the
/// worker leads.
pub(crate) fn elect(
    conn: &Connection,
    worker: i64,
    lease: Duration,
    now: Option<Millis>,
) -> rusqlite::Result<Option<Millis>> {
    let lease = lease.as_millis() as i64;
    Ok(query(conn, bind::elect(worker, lease, now), bind::int)?.pop())
}

/// Up to 100 dead jobs whose death was not announced.
pub(crate) fn unannounced(conn: &Connection) -> rusqlite::Result<Vec<crate::job::DeathRow>> {
    query(conn, bind::unannounced(), bind::death)
}

/// Marks the death of `id` (finished at `finished_at`) announced in the caller's transaction:
/// whether it was not yet.
pub(crate) fn announce(conn: &Connection, id: i64, finished_at: Millis) -> rusqlite::Result<bool> {
    Ok(execute(conn, bind::announce(id, finished_at))? == 1)
}

/// Gives the leadership up, if `worker` holds it.
pub(crate) fn resign(conn: &Connection, worker: i64) -> rusqlite::Result<()> {
    execute(conn, bind::resign(worker)).map(drop)
}

/// The latest tick of `signal` that fired.
pub(crate) fn last_tick(conn: &Connection, signal: &str) -> rusqlite::Result<Option<Millis>> {
    query_one(conn, bind::last_tick(signal), bind::int_or_null)
}

/// Records the tick `tick` of `signal` in the caller's transaction, unless it or a later one
/// was: whether this worker fires it.
pub(crate) fn record_tick(
    conn: &Connection,
    signal: &str,
    tick: Millis,
    worker: i64,
    now: Option<Millis>,
) -> rusqlite::Result<bool> {
    Ok(execute(conn, bind::tick(signal, tick, worker, now))? == 1)
}

/// The queues an operator paused.
pub(crate) fn paused_queues(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let queues = query(conn, bind::queues(), bind::queue_row)?;
    Ok(queues
        .into_iter()
        .filter(|(_, paused)| *paused)
        .map(|(name, _)| name)
        .collect())
}

/// Of the jobs `ids`, those an operator cancelled.
pub(crate) fn cancelled_of(conn: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    query(
        conn,
        bind::cancelled_of(lifecycle::ids_json(ids)),
        bind::int,
    )
}

/// Up to `selection.limit` jobs of its filter after its cursor, by id.
pub(crate) fn list_jobs(
    conn: &Connection,
    selection: &Selection<'_>,
) -> rusqlite::Result<Vec<ListedRow>> {
    query(conn, bind::selected(JOBS, selection), bind::listed)
}

/// One job with its payload and attempts.
pub(crate) fn job(
    conn: &Connection,
    id: i64,
    now: Option<Millis>,
) -> rusqlite::Result<Option<JobDetail>> {
    Ok(query(conn, bind::job(now, id), bind::job_detail)?
        .into_iter()
        .next())
}

/// One chunk of `action` over `selection`: the ids it changed, or (`dry_run`) would change.
pub(crate) fn act(
    conn: &Connection,
    action: Action,
    selection: &Selection<'_>,
    dry_run: bool,
) -> rusqlite::Result<Vec<i64>> {
    query(
        conn,
        bind::selected(crate::sqlite_ops::action_sql(action, dry_run), selection),
        bind::int,
    )
}

/// The counts by queue, handler and word, and the queues an operator paused or resumed.
pub(crate) fn overview(conn: &Connection, now: Option<Millis>) -> rusqlite::Result<OverviewRows> {
    Ok((
        query(conn, bind::overview(now), bind::overview_row)?,
        query(conn, bind::queues(), bind::queue_row)?,
    ))
}

/// Pauses or resumes `queue`.
pub(crate) fn set_paused(
    conn: &Connection,
    queue: &str,
    paused: bool,
    now: Option<Millis>,
) -> rusqlite::Result<()> {
    execute(conn, bind::set_paused(queue, paused, now)).map(drop)
}

/// Deletes the dead, discarded and cancelled jobs that finished before `before`, 10,000 rows a
/// statement; how many.
pub(crate) fn purge_finished(conn: &Connection, before: Millis) -> rusqlite::Result<u64> {
    let mut purged = 0;
    loop {
        let deleted = purge_finished_batch(conn, before)?;
        purged += deleted;
        if deleted < PURGE_BATCH {
            return Ok(purged);
        }
    }
}

/// Deletes up to 10,000 dead, discarded and cancelled jobs that finished before `before`.
pub(crate) fn purge_finished_batch(conn: &Connection, before: Millis) -> rusqlite::Result<u64> {
    Ok(execute(conn, bind::purge_finished(before))? as u64)
}

/// Deletes up to 10,000 ticks of periodic signals recorded before `before`, each signal's
/// latest kept.
pub(crate) fn prune_ticks_batch(conn: &Connection, before: Millis) -> rusqlite::Result<u64> {
    Ok(execute(conn, bind::prune_ticks(before))? as u64)
}

/// The rows of the stats query: (handler, state, count, oldest creation time).
pub(crate) fn stats(conn: &Connection) -> rusqlite::Result<Vec<StatRow>> {
    query(conn, bind::stats(), bind::stat)
}

/// Up to `limit` dead jobs with an id above `after`: (id, handler, attempt, last error,
/// payload).
pub(crate) fn dead_jobs(
    conn: &Connection,
    after: i64,
    limit: u32,
) -> rusqlite::Result<Vec<DeadJobRow>> {
    query(conn, bind::dead_jobs(after, limit), bind::dead_job)
}

/// Whether a failed attempt is SQLite's `SQLITE_BUSY_SNAPSHOT` (extended code 517): the job's
/// transaction read, another connection committed, and the transaction tried to write.
pub(crate) fn is_busy_snapshot(error: &crate::error::AttemptError) -> bool {
    use crate::error::AttemptError;
    const SQLITE_BUSY_SNAPSHOT: std::ffi::c_int = 517;
    let rusqlite = match error {
        AttemptError::Database(error) => Some(error),
        AttemptError::Handler(error) | AttemptError::Context(error) => {
            error.downcast_ref::<rusqlite::Error>()
        }
        _ => None,
    };
    rusqlite
        .and_then(rusqlite::Error::sqlite_error)
        .is_some_and(|error| error.extended_code == SQLITE_BUSY_SNAPSHOT)
}

/// Whether a failed attempt is SQLite's busy or locked error.
pub(crate) fn is_busy_attempt(error: &crate::error::AttemptError) -> bool {
    use crate::error::AttemptError;
    match error {
        AttemptError::Database(error) => is_busy(error),
        AttemptError::Handler(error) | AttemptError::Context(error) => {
            error.downcast_ref::<rusqlite::Error>().is_some_and(is_busy)
        }
        _ => false,
    }
}

/// Whether `error` is SQLite saying the database is locked or busy: a wait and a retry help.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Which indexes the statements read, from SQLite's own `EXPLAIN QUERY PLAN`: not a timing.
#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    /// A migrated database holding 100,000 done jobs of another service, a few jobs of
    /// `emails.send` in every other state, and (if `analyzed`) the planner's statistics.
    fn beside_a_done_backlog(analyzed: bool) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        conn.execute_batch(
            "
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, state,
                          max_attempts, run_at, created_at, finished_at)
SELECT 'e', 's', 'archive.store', 'default', 0, '{}', 'done', 25, 0, 0, i FROM n;
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12)
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload, state,
                          max_attempts, run_at, created_at, worker, crashes)
SELECT 'e', 's', 'emails.send', 'default', 0, '{}',
       CASE i % 3 WHEN 0 THEN 'pending' WHEN 1 THEN 'running' ELSE 'dead' END, 25, 0, i,
       CASE WHEN i % 3 = 1 THEN 1 END, i % 2
FROM n;",
        )
        .unwrap();
        if analyzed {
            conn.execute_batch("ANALYZE").unwrap();
        }
        conn
    }

    /// The handlers of the statements that take them: `emails.send` alone.
    const MINE: &str = r#"[{"name": "emails.send", "signal": "s"}]"#;

    /// The steps of `sql`'s query plan, with `params` bound (a plan may depend on them).
    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = statement
            .query_map(params, |row| row.get::<_, String>(3))
            .unwrap();
        steps.collect::<rusqlite::Result<_>>().unwrap()
    }

    /// The steps that read the jobs table beyond one index's range of unfinished rows: a scan
    /// of the table (`signals_jobs`, or `job` in the statements that alias it), a range of
    /// rowids (which walks the done rows between), or the done rows' index.
    fn reads_done_rows(plan: &[String]) -> Vec<String> {
        plan.iter()
            .filter(|step| {
                let table_scan = ["SCAN signals_jobs", "SCAN job"]
                    .iter()
                    .any(|scan| step.starts_with(scan) && !step.contains(" INDEX signals_jobs_"));
                table_scan
                    || step.contains("rowid>")
                    || step.contains("rowid<")
                    || step.contains("signals_jobs_done")
            })
            .cloned()
            .collect()
    }

    /// `stats`, the idle check (`wait_idle` polls it every 20 ms) and the dead-job listing
    /// read the unfinished jobs through partial indexes, never the done ones.
    #[test]
    fn stats_the_idle_check_and_dead_jobs_never_read_the_done_rows() {
        let mut found = Vec::new();
        for analyzed in [false, true] {
            let conn = beside_a_done_backlog(analyzed);
            let plans = [
                ("STATS", plan(&conn, STATS, [])),
                ("BUSY", plan(&conn, BUSY, params![MINE, 100])),
                ("DEAD_JOBS", plan(&conn, DEAD_JOBS, [0, 50])),
            ];
            for (name, plan) in plans {
                if !reads_done_rows(&plan).is_empty() {
                    found.push(format!("{name} (analyzed: {analyzed}): {plan:?}"));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
    }

    /// A migrated database holding another service's 100,000 due jobs (`outbox.publish`, at a
    /// higher priority than ours), and a few of ours: `emails.send` at priority 0 (one of them
    /// a due suspect) and `sms.send` at priority 5.
    fn beside_a_foreign_backlog(analyzed: bool) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        conn.execute_batch(
            "
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload,
                          max_attempts, run_at, created_at)
SELECT 'e', 's', 'outbox.publish', 'default', 10, '{}', 25, 0, 0 FROM n;
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, payload,
                          max_attempts, run_at, created_at, crashes)
VALUES ('e', 'app::Welcome', 'emails.send', 'default', 0, '{}', 25, 1, 0, 0),
       ('e', 'app::Welcome', 'emails.send', 'default', 0, '{}', 25, 2, 0, 0),
       ('e', 'app::Welcome', 'emails.send', 'default', 0, '{}', 25, 3, 0, 1),
       ('e', 'app::Welcome', 'emails.send', 'default', 0, '{}', 25, 9999, 0, 0),
       ('e', 'app::Code', 'sms.send', 'default', 5, '{}', 25, 4, 0, 0),
       ('e', 'app::Code', 'sms.send', 'default', 5, '{}', 25, 5, 0, 0);",
        )
        .unwrap();
        if analyzed {
            conn.execute_batch("ANALYZE").unwrap();
        }
        conn
    }

    /// The steps that read jobs of handlers the statement was not asked about: every read of
    /// the jobs table must be a probe of one handler's range, a row by id, or the running jobs
    /// (`signals_jobs_worker`: at most every worker's concurrency).
    fn reads_other_handlers(plan: &[String]) -> Vec<String> {
        plan.iter()
            .filter(|step| {
                let reads = [
                    "SCAN signals_jobs",
                    "SCAN job",
                    "SEARCH signals_jobs",
                    "SEARCH job",
                ]
                .iter()
                .any(|read| step.starts_with(read));
                reads
                    && !step.contains("(handler=?")
                    && !step.contains("(rowid=?)")
                    && !step.contains("USING INDEX signals_jobs_worker")
            })
            .cloned()
            .collect()
    }

    /// Claims (suspects or not), the runnable check and the suspect check probe each of the
    /// worker's handlers through an index that starts at the handler: another service's due
    /// backlog in the same file is never read. The claim still takes the jobs in claim order
    /// across handlers, and only due ones.
    #[test]
    fn claims_probe_each_handler_and_never_read_another_services_backlog() {
        let handlers = r#"[{"name": "emails.send", "signal": "Welcome"},
                           {"name": "sms.send", "signal": "Code"}]"#;
        let mut found = Vec::new();
        for analyzed in [false, true] {
            let conn = beside_a_foreign_backlog(analyzed);
            let plans = [
                (
                    "CLAIM",
                    plan(
                        &conn,
                        CLAIM,
                        params![100, handlers, false, 3, 7, 1, "host:1"],
                    ),
                ),
                (
                    "CLAIM_SUSPECT",
                    plan(
                        &conn,
                        CLAIM_SUSPECT,
                        params![100, handlers, true, 3, 7, 1, "host:1"],
                    ),
                ),
                ("RUNNABLE", plan(&conn, RUNNABLE, params![100, handlers])),
                (
                    "RESERVE_SUSPECT",
                    plan(&conn, RESERVE_SUSPECT, params![100, handlers, 7, 0]),
                ),
                ("BUSY", plan(&conn, BUSY, params![handlers, 100])),
            ];
            for (name, plan) in plans {
                if !reads_other_handlers(&plan).is_empty() {
                    found.push(format!("{name} (analyzed: {analyzed}): {plan:?}"));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
        let conn = beside_a_foreign_backlog(false);
        let claim = |suspects| {
            let request = ClaimRequest {
                handlers,
                limit: 3,
                suspects,
                worker: 1,
                now: Some(100),
                token: 7,
            };
            let jobs = super::claim(&conn, &request).unwrap();
            jobs.iter()
                .map(|job| (job.handler.clone(), job.run_at))
                .collect::<Vec<_>>()
        };
        let job = |handler: &str, run_at| (handler.to_owned(), run_at);
        assert_eq!(
            claim(false),
            [
                job("sms.send", 4),
                job("sms.send", 5),
                job("emails.send", 1)
            ]
        );
        assert_eq!(
            claim(false),
            [job("emails.send", 2)],
            "not the suspect, nor 9999"
        );
        assert_eq!(claim(true), [job("emails.send", 3)]);
    }
}
