//! The jobs table through sqlx: every statement of `postgres.rs` and `sqlite_sql.rs`, run on
//! whichever database a [`Tx`] holds. The [life cycle](crate::lifecycle) above it is written
//! once; only the SQL text differs.

use std::time::Duration;

use crate::asynchronous::Tx;
use crate::clock::Millis;
use crate::enqueue::JobRows;
use crate::error::Error;
#[cfg(feature = "postgres")]
use crate::job::JobInfo;
use crate::job::RetryPolicy;
use crate::lifecycle::{self, ClaimRequest, Claimed, Failure, StaleWatch};
use crate::sqlite_sql::SCHEMA_VERSION;

/// Whether the SQL module `$sql` is PostgreSQL's.
macro_rules! conn_is_pg {
    ($sql:ident) => {
        $sql::IS_POSTGRES
    };
}

/// The time a statement binds: `None` on PostgreSQL lets the server's clock decide.
fn now_for(postgres: bool, now: Option<Millis>) -> Option<Millis> {
    match postgres {
        true => now,
        false => Some(local(now)),
    }
}

/// Runs `$body` with `$conn` the connection and `$sql` the module of SQL text for its
/// database. A job's lazy transaction is opened before it gets here ([`Tx::open`]).
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
            Tx::__Job(_) => unreachable!("a job's transaction is opened before a statement"),
        }
    };
}

/// The time a SQLite statement is given: the manual clock's, or this process's.
fn local(now: Option<Millis>) -> Millis {
    now.unwrap_or_else(|| crate::Clock::system().now())
}

/// Writes the jobs of one `notify` in the caller's transaction, in one statement (a job's
/// handler may notify too: its lazy transaction opens here).
pub(crate) async fn enqueue(tx: Tx<'_>, rows: &JobRows) -> Result<(), sqlx::Error> {
    let event_id = rows.event_id.to_string();
    let tx = tx.open().await?;
    if let [(job, payload)] = rows.rows.as_slice() {
        let postgres = tx.is_postgres();
        on!(tx, |conn, sql| {
            let query = sqlx::query(sql::ENQUEUE)
                .bind(&event_id)
                .bind(rows.signal)
                .bind(job.name())
                .bind(job.queue())
                .bind(job.priority())
                .bind(payload)
                .bind(job.max_attempts() as i32);
            // PostgreSQL's clock writes the time there; SQLite stores the writer's, for stats.
            match postgres {
                true => query.bind(None::<i64>),
                false => query.bind(rows.now),
            }
            .execute(&mut *conn)
            .await?;
        });
        return Ok(());
    }
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            let column = |f: fn(&JobInfo, &String) -> String| -> Vec<String> {
                rows.rows
                    .iter()
                    .map(|(job, payload)| f(job, payload))
                    .collect()
            };
            let number = |f: fn(&JobInfo) -> i32| -> Vec<i32> {
                rows.rows.iter().map(|(job, _)| f(job)).collect()
            };
            sqlx::query(crate::postgres::ENQUEUE_MANY)
                .bind(&event_id)
                .bind(rows.signal)
                .bind(column(|job, _| job.name().to_owned()))
                .bind(column(|job, _| job.queue().to_owned()))
                .bind(number(JobInfo::priority))
                .bind(column(|_, payload| payload.clone()))
                .bind(number(|job| job.max_attempts() as i32))
                .bind(None::<i64>)
                .execute(&mut *conn)
                .await?;
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            sqlx::query(crate::sqlite_sql::ENQUEUE_MANY)
                .bind(&event_id)
                .bind(rows.signal)
                .bind(crate::enqueue::rows_json(&rows.rows))
                .bind(rows.now)
                .execute(&mut *conn)
                .await?;
        }
        Tx::__Job(_) => unreachable!("opened above"),
    }
    Ok(())
}

/// Claims up to `request.limit` runnable jobs, in claim order; charges their attempts.
pub async fn claim(tx: Tx<'_>, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>, sqlx::Error> {
    let token = lifecycle::token();
    let rows: Vec<(i64, String, String, String, i32, i32, i64)> = match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            sqlx::query_as(crate::postgres::CLAIM)
                .bind(request.now)
                .bind(request.handlers)
                .bind(request.suspects)
                .bind(request.limit as i64)
                .bind(token)
                .bind(request.worker)
                .fetch_all(&mut *conn)
                .await?
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            sqlx::query_as(crate::sqlite_sql::CLAIM)
                .bind(local(request.now))
                .bind(request.handlers)
                .bind(request.suspects)
                .bind(request.limit as i64)
                .bind(token)
                .bind(request.worker)
                .fetch_all(&mut *conn)
                .await?
        }
        Tx::__Job(_) => unreachable!("a claim runs on the worker's own connection"),
    };
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(
            |(id, event_id, handler, payload, attempt, priority, run_at)| Claimed {
                id,
                event_id,
                handler,
                payload,
                attempt: attempt.max(0) as u32,
                token,
                priority,
                run_at,
            },
        )
        .collect();
    lifecycle::claim_order(&mut claimed);
    Ok(claimed)
}

/// Marks the job done in the handler's transaction; `false` if its claim no longer holds it.
pub(crate) async fn complete(
    tx: Tx<'_>,
    job: &Claimed,
    now: Option<Millis>,
) -> Result<bool, sqlx::Error> {
    let done = on!(tx, |conn, sql| {
        sqlx::query(sql::COMPLETE)
            .bind(now_for(conn_is_pg!(sql), now))
            .bind(job.id)
            .bind(job.token)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    Ok(done == 1)
}

/// Marks done the jobs of `done`'s `(id, token)` pairs still held by those claims: the
/// completer's flush, or a relay's acked messages. How many.
pub async fn complete_many(
    tx: Tx<'_>,
    done: &[(i64, i64)],
    now: Option<Millis>,
) -> Result<u64, sqlx::Error> {
    if done.is_empty() {
        return Ok(0);
    }
    let pairs = lifecycle::completions_json(done);
    Ok(on!(tx, |conn, sql| {
        sqlx::query(sql::COMPLETE_MANY)
            .bind(now_for(conn_is_pg!(sql), now))
            .bind(pairs)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    }))
}

/// Records a failed attempt: pending again after the backoff, or dead; `false` if the claim no
/// longer holds the job.
pub async fn fail(tx: Tx<'_>, job: &Claimed, failure: &Failure<'_>) -> Result<bool, sqlx::Error> {
    let changed = on!(tx, |conn, sql| {
        sqlx::query(sql::FAIL)
            .bind(failure.permanent)
            .bind(now_for(conn_is_pg!(sql), failure.now))
            .bind(failure.delay_ms)
            .bind(failure.error)
            .bind(job.id)
            .bind(job.token)
            .bind(failure.dead_after_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    Ok(changed == 1)
}

/// Renews worker `worker`'s lease: one row.
pub async fn heartbeat(
    tx: Tx<'_>,
    worker: i64,
    lease: Duration,
    now: Option<Millis>,
) -> Result<(), sqlx::Error> {
    on!(tx, |conn, sql| {
        sqlx::query(sql::HEARTBEAT)
            .bind(worker)
            .bind(now_for(conn_is_pg!(sql), now))
            .bind(lease.as_millis() as i64)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Forgets a worker that stopped (its jobs finished or were failed).
pub async fn retire(tx: Tx<'_>, worker: i64) -> Result<(), sqlx::Error> {
    on!(tx, |conn, sql| {
        sqlx::query(sql::RETIRE)
            .bind(worker)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Returns the jobs of workers whose lease expired to the queue (suspects from now on), and
/// forgets those workers; how many jobs. On SQLite `watch` judges the leases (see
/// [`StaleWatch`]); PostgreSQL's clock does on PostgreSQL.
#[cfg_attr(not(feature = "sqlx-sqlite"), allow(unused_variables))]
pub async fn rescue(
    mut tx: Tx<'_>,
    me: i64,
    watch: &mut StaleWatch,
    retry: &RetryPolicy,
    now: Option<Millis>,
) -> Result<u64, sqlx::Error> {
    let (base, cap) = (retry.base.as_millis() as i64, retry.cap.as_millis() as i64);
    match tx.reborrow() {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            use crate::postgres as sql;
            let rescued = sqlx::query(sql::RESCUE)
                .bind(now)
                .bind(base)
                .bind(cap)
                .bind(lifecycle::RESCUED)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            sqlx::query(sql::PRUNE_WORKERS)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(rescued)
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            use crate::sqlite_sql as sql;
            let rows: Vec<(i64, i64, i64)> =
                sqlx::query_as(sql::WORKERS).fetch_all(&mut *conn).await?;
            let stale = serde_json::to_string(&watch.observe(me, &rows)).expect("ids serialize");
            let rescued = sqlx::query(sql::RESCUE)
                .bind(local(now))
                .bind(base)
                .bind(cap)
                .bind(lifecycle::RESCUED)
                .bind(&stale)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            sqlx::query(sql::PRUNE_WORKERS)
                .bind(&stale)
                .execute(&mut *conn)
                .await?;
            Ok(rescued)
        }
        Tx::__Job(_) => unreachable!("a rescue runs on the worker's own connection"),
    }
}

/// Whether a suspect of `handlers` is due (it runs alone).
pub async fn suspect_due(
    tx: Tx<'_>,
    handlers: &str,
    now: Option<Millis>,
) -> Result<bool, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query_scalar(sql::SUSPECT_DUE)
            .bind(now_for(conn_is_pg!(sql), now))
            .bind(handlers)
            .fetch_one(&mut *conn)
            .await?
    }))
}

/// Runs a savepoint statement (`SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO SAVEPOINT`).
pub async fn savepoint(tx: Tx<'_>, statement: &'static str) -> Result<(), sqlx::Error> {
    on!(tx, |conn, _sql| {
        sqlx::raw_sql(statement).execute(&mut *conn).await?;
    });
    Ok(())
}

/// Every dead job (of `handler`, if given) pending again, attempts reset; how many.
pub(crate) async fn retry_dead(
    tx: Tx<'_>,
    handler: Option<&str>,
    now: Option<Millis>,
) -> Result<u64, sqlx::Error> {
    Ok(on!(tx, |conn, sql| {
        sqlx::query(sql::RETRY_DEAD)
            .bind(now_for(conn_is_pg!(sql), now))
            .bind(handler)
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

/// Creates the schema, or brings it up to date, and checks its version. A schema already
/// current is only read: no lock is taken on the jobs table. A schema newer than this crate
/// is refused before anything changes. Otherwise one transaction (`BEGIN IMMEDIATE` on SQLite;
/// under an advisory lock on PostgreSQL).
pub async fn migrate(pool: &crate::Pool) -> Result<(), Error> {
    use sqlx::Connection as _;
    let mut conn = pool.acquire().await?;
    let check = |found: Option<i64>| match found {
        Some(found) if found > SCHEMA_VERSION => Err(Error::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        }),
        found => Ok(found == Some(SCHEMA_VERSION)),
    };
    // Reads first, outside any transaction (on SQLite in WAL a read never waits for a writer):
    // a current schema takes no lock.
    let exists: bool = on!(conn.tx(), |c, sql| {
        sqlx::query_scalar(sql::HAS_SCHEMA)
            .fetch_one(&mut *c)
            .await?
    });
    if exists {
        let found: Option<i64> = on!(conn.tx(), |c, sql| {
            sqlx::query_scalar(sql::VERSION).fetch_one(&mut *c).await?
        });
        if check(found)? {
            return Ok(());
        }
    }
    match conn.tx() {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            use crate::postgres as sql;
            let mut tx = conn.begin().await?;
            sqlx::query(sql::LOCK).execute(&mut *tx).await?;
            let found: Option<i64> = match exists {
                true => sqlx::query_scalar(sql::VERSION).fetch_one(&mut *tx).await?,
                false => None,
            };
            if !check(found)? {
                sqlx::raw_sql(sql::SCHEMA).execute(&mut *tx).await?;
                sqlx::query(sql::SET_VERSION)
                    .bind(SCHEMA_VERSION as i32)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            use crate::sqlite_sql as sql;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let found: Option<i64> = match exists {
                true => sqlx::query_scalar(sql::VERSION).fetch_one(&mut *tx).await?,
                false => None,
            };
            if !check(found)? {
                sqlx::raw_sql(sql::SCHEMA).execute(&mut *tx).await?;
                for (column, add) in sql::ADDED_COLUMNS {
                    let has: i64 = sqlx::query_scalar(sql::HAS_COLUMN)
                        .bind(column)
                        .fetch_one(&mut *tx)
                        .await?;
                    if has == 0 {
                        sqlx::query(add).execute(&mut *tx).await?;
                    }
                }
                sqlx::raw_sql(sql::INDEXES).execute(&mut *tx).await?;
                sqlx::query(sql::SET_VERSION)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Tx::__Job(_) => unreachable!("a pooled connection is never a job's transaction"),
    }
    Ok(())
}

/// Whether waiting and trying again may help: a busy SQLite database, a lost connection.
pub(crate) fn retryable(error: &sqlx::Error) -> bool {
    is_busy(error)
        || matches!(
            error,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        )
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
