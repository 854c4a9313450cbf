//! The jobs table through sqlx: every statement of `postgres.rs` and `sqlite.rs`, run on
//! whichever database a [`Tx`] holds. The claim, lease and retry logic above it (the async
//! worker) is written once; only the SQL text differs.

use std::time::Duration;

use crate::asynchronous::Tx;
use crate::clock::Millis;
use crate::enqueue::JobRow;
use crate::error::Error;
use crate::sqlite_sql::{Claimed, SCHEMA_VERSION};

/// Runs `$body` with `$conn` the connection and `$sql` the module of SQL text for its
/// database.
macro_rules! on {
    ($tx:expr, |$conn:ident, $sql:ident| $body:expr) => {
        match $tx {
            #[cfg(feature = "postgres")]
            Tx::Postgres($conn) => {
                #[allow(unused_imports)]
                use crate::postgres as $sql;
                $body
            }
            #[cfg(feature = "sqlx-sqlite")]
            Tx::Sqlite($conn) => {
                #[allow(unused_imports)]
                use crate::sqlite_sql as $sql;
                $body
            }
        }
    };
}

/// Writes one job row in the caller's transaction.
pub(crate) async fn enqueue(tx: Tx<'_>, row: &JobRow) -> Result<(), sqlx::Error> {
    let job = row.job;
    on!(tx, |conn, sql| {
        sqlx::query(sql::ENQUEUE)
            .bind(row.event_id.to_string())
            .bind(row.signal)
            .bind(job.name())
            .bind(job.queue())
            .bind(job.priority())
            .bind(&row.payload)
            .bind(job.max_attempts() as i32)
            .bind(row.now)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Claims up to `limit` runnable jobs of `handlers` (a JSON array of names).
pub async fn claim(
    tx: Tx<'_>,
    handlers: &str,
    limit: usize,
    now: Millis,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let token = fastrand::i64(1..i64::MAX);
    let lease_until = now + lease.as_millis() as i64;
    let rows: Vec<(i64, String, String, String, i32)> = on!(tx, |conn, sql| {
        sqlx::query_as(sql::CLAIM)
            .bind(lease_until)
            .bind(token)
            .bind(now)
            .bind(handlers)
            .bind(limit as i64)
            .fetch_all(&mut *conn)
            .await?
    });
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|(id, event_id, handler, payload, attempt)| Claimed {
            id,
            event_id,
            handler,
            payload,
            attempt: attempt.max(0) as u32,
            token,
        })
        .collect();
    claimed.sort_by_key(|job| job.id);
    Ok(claimed)
}

/// Marks the job done in the handler's transaction; `false` if the lease was lost.
pub(crate) async fn complete(tx: Tx<'_>, job: &Claimed, now: Millis) -> Result<bool, sqlx::Error> {
    let done = on!(tx, |conn, sql| {
        sqlx::query(sql::COMPLETE)
            .bind(now)
            .bind(job.id)
            .bind(job.token)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    Ok(done == 1)
}

/// Records a failed attempt: pending again after `retry_at`, or dead.
pub async fn fail(
    tx: Tx<'_>,
    job: &Claimed,
    permanent: bool,
    now: Millis,
    retry_at: Millis,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let changed = on!(tx, |conn, sql| {
        sqlx::query(sql::FAIL)
            .bind(permanent)
            .bind(now)
            .bind(retry_at)
            .bind(error)
            .bind(job.id)
            .bind(job.token)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    Ok(changed == 1)
}

/// Gives a claimed job back without counting the attempt.
pub(crate) async fn release(tx: Tx<'_>, id: i64, token: i64) -> Result<bool, sqlx::Error> {
    let changed = on!(tx, |conn, sql| {
        sqlx::query(sql::RELEASE)
            .bind(id)
            .bind(token)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    Ok(changed == 1)
}

/// Extends the leases the claims with these tokens still hold: one statement per claim.
pub(crate) async fn heartbeat(
    mut tx: Tx<'_>,
    tokens: &[i64],
    lease_until: Millis,
) -> Result<(), sqlx::Error> {
    for &token in tokens {
        on!(tx.reborrow(), |conn, sql| {
            sqlx::query(sql::HEARTBEAT)
                .bind(lease_until)
                .bind(token)
                .execute(&mut *conn)
                .await?;
        });
    }
    Ok(())
}

/// Locks the rows of the jobs `ids` that the claim `token` still holds, for the rest of the
/// transaction; their ids (a group's fence).
pub(crate) async fn lock_claimed(
    tx: Tx<'_>,
    ids: &[i64],
    token: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let ids = serde_json::to_string(ids).expect("ids serialize");
    Ok(on!(tx, |conn, sql| {
        sqlx::query_scalar(sql::LOCK_CLAIMED)
            .bind(ids)
            .bind(token)
            .fetch_all(&mut *conn)
            .await?
    }))
}

/// Marks the jobs `ids` of the claim `token` done (a group's completion).
pub async fn complete_many(
    tx: Tx<'_>,
    ids: &[i64],
    token: i64,
    now: Millis,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(ids).expect("ids serialize");
    let done = on!(tx, |conn, sql| {
        sqlx::query(sql::COMPLETE_MANY)
            .bind(now)
            .bind(json)
            .bind(token)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    match done == ids.len() as u64 {
        true => Ok(()),
        // Impossible while the rows are locked; fail the group rather than half-complete it.
        false => Err(sqlx::Error::Protocol(format!(
            "completed {done} of {} locked jobs",
            ids.len()
        ))),
    }
}

/// Runs a savepoint statement (`SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO SAVEPOINT`).
pub async fn savepoint(tx: Tx<'_>, statement: &'static str) -> Result<(), sqlx::Error> {
    on!(tx, |conn, _sql| {
        sqlx::raw_sql(statement).execute(&mut *conn).await?;
    });
    Ok(())
}

/// Returns every job with an expired lease to the queue; how many.
pub async fn rescue(tx: Tx<'_>, now: Millis) -> Result<u64, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query(sql::RESCUE)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    }))
}

/// Every dead job pending again, attempts reset; how many.
pub(crate) async fn retry_dead(tx: Tx<'_>, now: Millis) -> Result<u64, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query(sql::RETRY_DEAD)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    }))
}

/// Deletes done jobs that finished before `before`; how many.
pub(crate) async fn purge_done(tx: Tx<'_>, before: Millis) -> Result<u64, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query(sql::PURGE_DONE)
            .bind(before)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    }))
}

/// How many jobs of `handlers` are pending or running.
pub async fn busy(tx: Tx<'_>, handlers: &str) -> Result<i64, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query_scalar(sql::BUSY)
            .bind(handlers)
            .fetch_one(&mut *conn)
            .await?
    }))
}

/// The rows of the stats query: (handler, state, count, oldest creation time).
pub(crate) async fn stats(
    tx: Tx<'_>,
) -> Result<Vec<(String, String, i64, Option<i64>)>, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query_as(sql::STATS).fetch_all(&mut *conn).await?
    }))
}

/// The dead jobs: (id, handler, attempt, last error, payload).
pub(crate) async fn dead_jobs(
    tx: Tx<'_>,
) -> Result<Vec<(i64, String, i32, Option<String>, String)>, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query_as(sql::DEAD_JOBS).fetch_all(&mut *conn).await?
    }))
}

/// Creates the schema if needed and checks its version, in one transaction (`BEGIN IMMEDIATE`
/// on SQLite; under an advisory lock on PostgreSQL).
pub async fn migrate(pool: &crate::Pool) -> Result<(), Error> {
    use sqlx::Connection as _;
    let mut conn = pool.acquire().await?;
    let found: Option<i64> = match conn.tx() {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            use crate::postgres as sql;
            let mut tx = conn.begin().await?;
            sqlx::query(sql::LOCK).execute(&mut *tx).await?;
            sqlx::raw_sql(sql::SCHEMA).execute(&mut *tx).await?;
            let found: Option<i64> = sqlx::query_scalar(sql::VERSION).fetch_one(&mut *tx).await?;
            if found.is_none_or(|found| found < SCHEMA_VERSION) {
                sqlx::query(sql::SET_VERSION)
                    .bind(SCHEMA_VERSION as i32)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            found
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            use crate::sqlite_sql as sql;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::raw_sql(sql::SCHEMA).execute(&mut *tx).await?;
            let found: Option<i64> = sqlx::query_scalar(sql::VERSION).fetch_one(&mut *tx).await?;
            if found.is_none_or(|found| found < SCHEMA_VERSION) {
                sqlx::query(sql::SET_VERSION)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            found
        }
    };
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(Error::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

/// Whether `error` is SQLite saying the database is locked or busy: a wait and a retry help.
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| {
            let code = code.parse::<i32>().unwrap_or(0);
            matches!(code & 0xff, 5 | 6)
        })
}

/// A message's row in a subscriber's inbox (the broker rung).
#[cfg(feature = "async")]
pub struct InboxRow<'a> {
    /// The durable consumer.
    pub consumer: &'a str,
    /// The message's `Nats-Msg-Id`.
    pub message_id: &'a str,
    /// The subject it arrived on.
    pub subject: &'a str,
    /// `done` or `dead`.
    pub state: &'a str,
    /// Why it is dead.
    pub error: Option<&'a str>,
    /// When it was recorded.
    pub now: Millis,
}

/// One inbox row per consumer and message id; a second delivery inserts nothing. (`$n`
/// parameters: SQLite takes them too.)
#[cfg(feature = "async")]
const INBOX_INSERT: &str = "
INSERT INTO signals_inbox (consumer, message_id, subject, state, error, received_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING";

/// A consumer's inbox rows by state.
#[cfg(feature = "async")]
const INBOX_COUNTS: &str = "
SELECT state, CAST(COUNT(*) AS BIGINT) FROM signals_inbox WHERE consumer = $1 GROUP BY state";

/// Records a message in the inbox; whether it was new.
#[cfg(feature = "async")]
pub async fn inbox_insert(tx: Tx<'_>, row: &InboxRow<'_>) -> Result<bool, sqlx::Error> {
    let inserted = on!(tx, |conn, _sql| {
        sqlx::query(INBOX_INSERT)
            .bind(row.consumer)
            .bind(row.message_id)
            .bind(row.subject)
            .bind(row.state)
            .bind(row.error)
            .bind(row.now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    Ok(inserted == 1)
}

/// A consumer's inbox counts: (state, rows).
#[cfg(feature = "async")]
pub async fn inbox_counts(tx: Tx<'_>, consumer: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    Ok(on!(tx, |conn, _sql| {
        sqlx::query_as(INBOX_COUNTS)
            .bind(consumer)
            .fetch_all(&mut *conn)
            .await?
    }))
}
