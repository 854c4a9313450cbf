//! The jobs table on SQLite through rusqlite (feature `sqlite`): the sync path's statements,
//! from [`sqlite_sql`](crate::sqlite_sql).

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::Millis;
use crate::error::Error;

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
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = migrate_in_transaction(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end)?;
    result
}

fn migrate_in_transaction(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch(SCHEMA)?;
    let version: Option<i64> = conn
        .query_row(VERSION, [], |row| row.get(0))
        .optional()?
        .flatten();
    match version {
        Some(found) if found > SCHEMA_VERSION => Err(Error::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        }),
        Some(found) if found == SCHEMA_VERSION => Ok(()),
        // `SCHEMA` brought an older table up to date (each statement is `IF NOT EXISTS`).
        _ => {
            conn.execute(SET_VERSION, [SCHEMA_VERSION])?;
            Ok(())
        }
    }
}

/// Claims up to `limit` runnable jobs of the handlers in `handlers` (a JSON array of names).
pub(crate) fn claim(
    conn: &Connection,
    handlers: &str,
    limit: usize,
    now: Millis,
    lease: Duration,
) -> rusqlite::Result<Vec<Claimed>> {
    let token = fastrand::i64(1..i64::MAX);
    let lease_until = now + lease.as_millis() as i64;
    let mut statement = conn.prepare_cached(CLAIM)?;
    let rows = statement.query_map(
        params![lease_until, token, now, handlers, limit as i64],
        |row| {
            Ok(Claimed {
                id: row.get(0)?,
                event_id: row.get(1)?,
                handler: row.get(2)?,
                payload: row.get(3)?,
                attempt: row.get(4)?,
                token,
            })
        },
    )?;
    let mut claimed: Vec<Claimed> = rows.collect::<rusqlite::Result<_>>()?;
    // RETURNING gives rows in no promised order: run them in claim order.
    claimed.sort_by_key(|job| job.id);
    Ok(claimed)
}

/// Marks the job done in `tx` (the handler's transaction); `false` if the lease was lost.
pub(crate) fn complete(conn: &Connection, job: &Claimed, now: Millis) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(COMPLETE)?
        .execute(params![now, job.id, job.token])?;
    Ok(changed == 1)
}

/// Records a failed attempt: pending again after `retry_at`, or dead.
pub(crate) fn fail(
    conn: &Connection,
    job: &Claimed,
    permanent: bool,
    now: Millis,
    retry_at: Millis,
    error: &str,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(FAIL)?
        .execute(params![permanent, now, retry_at, error, job.id, job.token])?;
    Ok(changed == 1)
}

/// Gives a claimed job back without counting the attempt.
pub(crate) fn release(conn: &Connection, id: i64, token: i64) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached(RELEASE)?.execute(params![id, token])? == 1)
}

/// Extends the leases of the jobs the claims with these tokens still hold: one statement per
/// claim, not per job.
pub(crate) fn heartbeat(
    conn: &Connection,
    tokens: &[i64],
    lease_until: Millis,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(HEARTBEAT)?;
    for &token in tokens {
        statement.execute(params![lease_until, token])?;
    }
    Ok(())
}

/// Whether a job of `handlers` is runnable now; a read that never waits for a writer.
pub(crate) fn runnable(conn: &Connection, handlers: &str, now: Millis) -> rusqlite::Result<bool> {
    conn.prepare_cached(RUNNABLE)?
        .query_row(params![now, handlers], |row| row.get(0))
}

/// Returns every job with an expired lease to the queue; how many.
pub(crate) fn rescue(conn: &Connection, now: Millis) -> rusqlite::Result<usize> {
    conn.prepare_cached(RESCUE)?.execute([now])
}

/// Every dead job pending again, attempts reset; how many.
pub(crate) fn retry_dead(conn: &Connection, now: Millis) -> rusqlite::Result<usize> {
    conn.execute(RETRY_DEAD, [now])
}

/// Deletes done jobs that finished before `before`; how many.
pub(crate) fn purge_done(conn: &Connection, before: Millis) -> rusqlite::Result<usize> {
    conn.execute(PURGE_DONE, [before])
}

/// Whether `error` is SQLite saying the database is locked or busy: a wait and a retry help.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
