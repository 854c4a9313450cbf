//! The jobs table on SQLite through rusqlite (feature `sqlite`): the sync path's statements,
//! from [`sqlite_sql`](crate::sqlite_sql).

use std::time::Duration;

use rusqlite::{params, Connection};

use crate::clock::Millis;
use crate::error::Error;
use crate::lifecycle::{self, ClaimRequest, Claimed, Failure, StaleWatch};
use crate::rows::{rows_json, JobRows};
use crate::timing::RetryPolicy;

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
    let exists: bool = conn.query_row(HAS_SCHEMA, [], |row| row.get(0))?;
    if !exists {
        return Ok((None, None));
    }
    let level = conn.query_row(VERSION, [], |row| row.get(0))?;
    let migrations: bool = conn.query_row(HAS_MIGRATIONS, [], |row| row.get(0))?;
    let applied = match migrations {
        true => conn.query_row(APPLIED, [], |row| row.get(0))?,
        false => None,
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
    for (column, add) in ADDED_COLUMNS {
        let has: i64 = conn.query_row(HAS_COLUMN, [column], |row| row.get(0))?;
        if has == 0 {
            conn.execute(add, [])?;
        }
    }
    conn.execute_batch(INDEXES)?;
    if level.is_none_or(|level| level < COMPATIBLE_FROM) {
        conn.execute(SET_VERSION, [COMPATIBLE_FROM])?;
    }
    conn.execute_batch(MIGRATED)?;
    Ok(())
}

/// Writes the jobs of one `notify` in the caller's transaction: one statement.
pub(crate) fn enqueue(conn: &Connection, rows: &JobRows) -> rusqlite::Result<()> {
    let event_id = rows.event_id.to_string();
    match rows.rows.as_slice() {
        [(job, payload)] => conn.prepare_cached(ENQUEUE)?.execute(params![
            event_id,
            rows.signal,
            job.name(),
            job.queue(),
            job.priority(),
            payload,
            job.max_attempts(),
            rows.now
        ])?,
        many => conn.prepare_cached(ENQUEUE_MANY)?.execute(params![
            event_id,
            rows.signal,
            rows_json(many),
            rows.now
        ])?,
    };
    Ok(())
}

/// The time a statement binds: the manual clock's, or this process's.
fn local(now: Option<Millis>) -> Millis {
    now.unwrap_or_else(|| crate::clock::Clock::system().now())
}

/// Claims up to `request.limit` runnable jobs, in claim order; charges their attempts.
pub(crate) fn claim(
    conn: &Connection,
    request: &ClaimRequest<'_>,
) -> rusqlite::Result<Vec<Claimed>> {
    let token = request.token;
    let claim = match request.suspects {
        true => CLAIM_SUSPECT,
        false => CLAIM,
    };
    let mut statement = conn.prepare_cached(claim)?;
    let params = params![
        local(request.now),
        request.handlers,
        request.suspects,
        request.limit as i64,
        token,
        request.worker
    ];
    let rows = statement.query_map(params, |row| {
        Ok(Claimed {
            id: row.get(0)?,
            event_id: row.get(1)?,
            handler: row.get(2)?,
            payload: row.get(3)?,
            attempt: row.get(4)?,
            token,
            priority: row.get(5)?,
            run_at: row.get(6)?,
        })
    })?;
    let mut claimed: Vec<Claimed> = rows.collect::<rusqlite::Result<_>>()?;
    lifecycle::claim_order(&mut claimed);
    Ok(claimed)
}

/// Marks the job done in the handler's transaction; `false` if its claim no longer holds it.
pub(crate) fn complete(
    conn: &Connection,
    job: &Claimed,
    now: Option<Millis>,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(COMPLETE)?
        .execute(params![local(now), job.id, job.token])?;
    if changed == 1 {
        conn.prepare_cached(COUNT_ONE)?.execute([&job.handler])?;
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
    let handlers: Vec<String> = tx
        .prepare_cached(COMPLETE_MANY)?
        .query_map(
            params![local(now), lifecycle::completions_json(done)],
            |row| row.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let counts = lifecycle::count_by_handler(&handlers, 1);
    if !counts.is_empty() {
        tx.prepare_cached(COUNT_DONE)?
            .execute(params![lifecycle::counts_json(&counts), 0])?;
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
    let changed = conn.prepare_cached(FAIL)?.execute(params![
        failure.permanent,
        local(failure.now),
        failure.delay_ms,
        failure.error,
        job.id,
        job.token,
        failure.dead_after_ms
    ])?;
    Ok(changed == 1)
}

/// The jobs running under worker `worker`: (id, token, attempt).
pub(crate) fn running_of(conn: &Connection, worker: i64) -> rusqlite::Result<Vec<(i64, i64, i32)>> {
    let mut statement = conn.prepare_cached(RUNNING_OF)?;
    let rows = statement.query_map([worker], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    rows.collect()
}

/// Renews worker `worker`'s lease: one row, whose counter moves.
pub(crate) fn heartbeat(
    conn: &Connection,
    worker: i64,
    lease: Duration,
    now: Option<Millis>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(HEARTBEAT)?.execute(params![
        worker,
        local(now),
        lease.as_millis() as i64
    ])?;
    Ok(())
}

/// Forgets a worker that stopped.
pub(crate) fn retire(conn: &Connection, worker: i64) -> rusqlite::Result<()> {
    conn.execute(RETIRE, [worker])?;
    Ok(())
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
    // up behind another transaction sees that it was.
    // Rolled back on drop, whatever fails (a transaction left open would refuse every later
    // `BEGIN`).
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let mut rescue = || -> rusqlite::Result<usize> {
        let rows: Vec<(i64, i64, i64)> = conn
            .prepare_cached(WORKERS)?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let stale = serde_json::to_string(&watch.observe(me, &rows)).expect("ids serialize");
        let rescued = conn.prepare_cached(RESCUE)?.execute(params![
            local(now),
            retry.base.as_millis() as i64,
            retry.cap.as_millis() as i64,
            lifecycle::RESCUED,
            stale
        ])?;
        conn.prepare_cached(PRUNE_WORKERS)?.execute([stale])?;
        Ok(rescued)
    };
    let rescued = rescue()?;
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
    let reserved = conn.prepare_cached(RESERVE_SUSPECT)?.execute(params![
        local(now),
        handlers,
        worker,
        wait.as_millis() as i64
    ])?;
    Ok(reserved > 0)
}

/// Whether a job of `handlers` is runnable now; a read that never waits for a writer.
pub(crate) fn runnable(
    conn: &Connection,
    handlers: &str,
    now: Option<Millis>,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(RUNNABLE)?
        .query_row(params![local(now), handlers], |row| row.get(0))
}

/// Every dead job (of `handler`, if given) pending again, attempts reset; how many.
pub(crate) fn retry_dead(
    conn: &Connection,
    handler: Option<&str>,
    now: Option<Millis>,
) -> rusqlite::Result<usize> {
    conn.execute(RETRY_DEAD, params![local(now), handler])
}

/// Deletes done jobs that finished before `before`, a batch per transaction that also takes
/// them off the done counts; how many.
pub(crate) fn purge_done(conn: &Connection, before: Millis) -> rusqlite::Result<usize> {
    let mut purged = 0;
    loop {
        let tx = conn.unchecked_transaction()?;
        let handlers: Vec<Option<String>> = tx
            .prepare_cached(PURGE_DONE)?
            .query_map([before], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let counts = lifecycle::count_by_handler(handlers.iter().flatten(), -1);
        if !counts.is_empty() {
            tx.prepare_cached(COUNT_DONE)?
                .execute(params![lifecycle::counts_json(&counts), -1])?;
        }
        tx.commit()?;
        purged += handlers.len();
        if (handlers.len() as u64) < PURGE_BATCH {
            return Ok(purged);
        }
    }
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
                ("BUSY", plan(&conn, BUSY, [MINE])),
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
                    plan(&conn, CLAIM, params![100, handlers, false, 3, 7, 1]),
                ),
                (
                    "CLAIM_SUSPECT",
                    plan(&conn, CLAIM_SUSPECT, params![100, handlers, true, 3, 7, 1]),
                ),
                ("RUNNABLE", plan(&conn, RUNNABLE, params![100, handlers])),
                (
                    "RESERVE_SUSPECT",
                    plan(&conn, RESERVE_SUSPECT, params![100, handlers, 7, 0]),
                ),
                ("BUSY", plan(&conn, BUSY, [handlers])),
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
