//! The jobs table through sqlx: every statement of `postgres.rs` and `sqlite_sql.rs`, run on
//! whichever database a [`Tx`] holds. The [life cycle](crate::lifecycle) above it is written
//! once; only the SQL text differs.

use std::time::Duration;

use crate::clock::Millis;
use crate::db::Tx;
use crate::error::Error;
use crate::job::JobInfo;
use crate::job::{DeadJobRow, StatRow};
use crate::lifecycle::{self, ClaimRequest, Claimed, Failure, StaleWatch};
use crate::ops::{Action, JobDetail, ListedRow, OverviewRows, Selection};
use crate::rows::JobRows;
use crate::timing::RetryPolicy;

/// Runs the PostgreSQL arm with the connection of a PostgreSQL transaction, the SQLite arm
/// with a SQLite one's. A job's lazy transaction is opened before it gets here ([`Tx::open`]).
macro_rules! on {
    ($tx:expr, postgres = |$pg:ident| $pg_body:expr, sqlite = |$lite:ident| $lite_body:expr $(,)?) => {
        match $tx {
            #[cfg(feature = "postgres")]
            Tx::Postgres($pg) => $pg_body,
            #[cfg(feature = "sqlx-sqlite")]
            Tx::Sqlite($lite) => $lite_body,
            Tx::__Job(_) => unreachable!("a job's transaction is opened before a statement"),
        }
    };
    // The same statement text on both databases (`$n` parameters: SQLite takes them too).
    ($tx:expr, either = |$conn:ident| $body:expr) => {
        on!($tx, postgres = |$conn| $body, sqlite = |$conn| $body)
    };
}

/// The SQLite statements of [`sqlite_bind`](crate::sqlite_bind), run through sqlx (the
/// rusqlite store runs the same ones).
#[cfg(feature = "sqlx-sqlite")]
mod lite {
    use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqliteRow};
    use sqlx::Row as _;

    use crate::sqlite_bind::{Arg, Bound, Row};

    impl Row for SqliteRow {
        type Error = sqlx::Error;
        fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
            self.try_get(column)
        }
        fn int_or_null(&self, column: usize) -> Result<Option<i64>, sqlx::Error> {
            self.try_get(column)
        }
        fn text(&self, column: usize) -> Result<String, sqlx::Error> {
            self.try_get(column)
        }
        fn text_or_null(&self, column: usize) -> Result<Option<String>, sqlx::Error> {
            self.try_get(column)
        }
    }

    fn query(statement: Bound<'_>) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
        let mut query = sqlx::query(statement.sql);
        for arg in statement.args {
            query = match arg {
                Arg::Int(value) => query.bind(value),
                Arg::Text(text) => query.bind(text.into_owned()),
                Arg::Null => query.bind(None::<i64>),
            };
        }
        query
    }

    /// Runs `statement`; how many rows it changed.
    pub(super) async fn execute(
        conn: &mut SqliteConnection,
        statement: Bound<'_>,
    ) -> Result<u64, sqlx::Error> {
        Ok(query(statement).execute(conn).await?.rows_affected())
    }

    /// Runs `statement` and reads each of its rows with `read`.
    pub(super) async fn fetch<T>(
        conn: &mut SqliteConnection,
        statement: Bound<'_>,
        read: impl Fn(&dyn Row<Error = sqlx::Error>) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let rows = query(statement).fetch_all(conn).await?;
        rows.iter().map(|row| read(row)).collect()
    }

    /// Runs `statement` and reads its one row with `read`.
    pub(super) async fn fetch_one<T>(
        conn: &mut SqliteConnection,
        statement: Bound<'_>,
        read: impl FnOnce(&dyn Row<Error = sqlx::Error>) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        read(&query(statement).fetch_one(conn).await?)
    }
}

#[cfg(feature = "sqlx-sqlite")]
use crate::sqlite_bind as bind;

/// Writes the jobs of one `notify` in the caller's transaction, in one statement (a job's
/// handler may notify too: its lazy transaction opens here).
pub(crate) async fn enqueue(tx: Tx<'_>, rows: &JobRows) -> Result<(), sqlx::Error> {
    let tx = tx.open().await?;
    on!(
        tx,
        postgres = |conn| enqueue_postgres(conn, rows).await?,
        sqlite = |conn| lite::execute(conn, bind::enqueue(rows)).await.map(drop)?,
    );
    Ok(())
}

/// The jobs of one `notify` on PostgreSQL: one row, or arrays of columns.
#[cfg(feature = "postgres")]
async fn enqueue_postgres(
    conn: &mut sqlx::PgConnection,
    rows: &JobRows,
) -> Result<(), sqlx::Error> {
    use crate::postgres as sql;
    let event_id = rows.event_id.to_string();
    // PostgreSQL's clock writes the creation time (the last argument, `NULL`).
    let coalescing = rows.rows.iter().any(|(_, row)| row.key.is_some());
    if let ([(job, row)], false) = (rows.rows.as_slice(), coalescing) {
        sqlx::query(sql::ENQUEUE)
            .bind(&event_id)
            .bind(rows.signal)
            .bind(job.name())
            .bind(job.queue())
            .bind(job.priority())
            .bind(&row.payload)
            .bind(job.max_attempts() as i32)
            .bind(None::<i64>)
            .bind(job.delay().as_millis() as i64)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    let column = |f: fn(&JobInfo, &crate::job::Row) -> String| -> Vec<String> {
        rows.rows.iter().map(|(job, row)| f(job, row)).collect()
    };
    let number =
        |f: fn(&JobInfo) -> i32| -> Vec<i32> { rows.rows.iter().map(|(job, _)| f(job)).collect() };
    let statement = match coalescing {
        true => sql::ENQUEUE_COALESCING,
        false => sql::ENQUEUE_MANY,
    };
    let query = sqlx::query(statement)
        .bind(&event_id)
        .bind(rows.signal)
        .bind(column(|job, _| job.name().to_owned()))
        .bind(column(|job, _| job.queue().to_owned()))
        .bind(number(JobInfo::priority))
        .bind(column(|_, row| row.payload.clone()))
        .bind(number(|job| job.max_attempts() as i32))
        .bind(None::<i64>)
        .bind(
            rows.rows
                .iter()
                .map(|(job, _)| job.delay().as_millis() as i64)
                .collect::<Vec<i64>>(),
        );
    let query = match coalescing {
        true => query.bind(
            rows.rows
                .iter()
                .map(|(_, row)| row.key.as_deref())
                .collect::<Vec<Option<&str>>>(),
        ),
        false => query,
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

/// A claimed row on PostgreSQL: id, event id, handler, payload, attempt, priority, `run_at`,
/// `created_at`.
#[cfg(feature = "postgres")]
type ClaimedRow = (i64, String, String, String, i32, i32, i64, i64);

/// Claims up to `request.limit` runnable jobs, in claim order; charges their attempts.
pub async fn claim(tx: Tx<'_>, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>, sqlx::Error> {
    let token = request.token;
    let mut claimed: Vec<Claimed> = on!(
        tx,
        postgres = |conn| {
            use crate::postgres as sql;
            let claim = match request.suspects {
                true => sql::CLAIM_SUSPECT,
                false => sql::CLAIM,
            };
            let rows: Vec<ClaimedRow> = sqlx::query_as(claim)
                .bind(request.now)
                .bind(request.handlers)
                .bind(request.limit as i64)
                .bind(token)
                .bind(request.worker)
                .bind(lifecycle::worker_label())
                .fetch_all(&mut *conn)
                .await?;
            rows.into_iter()
                .map(
                    |(id, event_id, handler, payload, attempt, priority, run_at, created_at)| {
                        Claimed {
                            id,
                            event_id,
                            handler,
                            payload,
                            attempt: attempt.max(0) as u32,
                            token,
                            priority,
                            run_at,
                            created_at,
                        }
                    },
                )
                .collect()
        },
        sqlite =
            |conn| lite::fetch(conn, bind::claim(request), |row| bind::claimed(row, token)).await?,
    );
    lifecycle::claim_order(&mut claimed);
    Ok(claimed)
}

/// Undoes a claim whose reply was lost (the connection dropped after the server committed it):
/// its jobs are runnable again, their attempts uncharged (no handler ran); how many.
pub async fn unclaim(tx: Tx<'_>, token: i64) -> Result<u64, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::UNCLAIM)
            .bind(token)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::unclaim(token)).await?,
    ))
}

/// Gives back jobs claimed ahead that never started (`(id, token)` pairs, a shutdown): they
/// are runnable again, their attempts uncharged; how many.
pub(crate) async fn give_back(tx: Tx<'_>, jobs: &[(i64, i64)]) -> Result<u64, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(0);
    }
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::GIVE_BACK)
            .bind(lifecycle::completions_json(jobs))
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::give_back(jobs)).await?,
    ))
}

/// The jobs running under worker `worker`: (id, token, attempt).
pub async fn running_of(tx: Tx<'_>, worker: i64) -> Result<Vec<(i64, i64, i32)>, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres::RUNNING_OF)
            .bind(worker)
            .fetch_all(&mut *conn)
            .await?,
        sqlite = |conn| lite::fetch(conn, bind::running_of(worker), bind::running).await?,
    ))
}

/// Marks the job done in the handler's transaction, and counts it there; `false` if its claim
/// no longer holds it.
pub(crate) async fn complete(
    tx: Tx<'_>,
    job: &Claimed,
    now: Option<Millis>,
) -> Result<bool, sqlx::Error> {
    let done = on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::COMPLETE)
            .bind(now)
            .bind(job.id)
            .bind(job.token)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| {
            let done = lite::execute(conn, bind::complete(job, now)).await?;
            if done == 1 {
                lite::execute(conn, bind::count_one(&job.handler)).await?;
            }
            done
        },
    );
    Ok(done == 1)
}

/// Marks done the jobs of `done`'s `(id, token)` pairs still held by those claims, and counts
/// them (one statement on PostgreSQL, one transaction on SQLite): the completer's flush, or a
/// relay's acked messages. Their handlers.
pub async fn complete_many(
    tx: Tx<'_>,
    done: &[(i64, i64)],
    now: Option<Millis>,
) -> Result<Vec<String>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    on!(
        tx,
        postgres = |conn| {
            sqlx::query_scalar(crate::postgres::COMPLETE_MANY)
                .bind(now)
                .bind(lifecycle::completions_json(done))
                .fetch_all(&mut *conn)
                .await
        },
        sqlite = |conn| {
            use sqlx::Connection as _;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let handlers = lite::fetch(&mut tx, bind::complete_many(done, now), bind::text).await?;
            if let Some(count) = bind::count_done(&handlers, 1) {
                lite::execute(&mut tx, count).await?;
            }
            tx.commit().await?;
            Ok(handlers)
        },
    )
}

/// Records a failed attempt: pending again after the backoff, or dead; `false` if the claim no
/// longer holds the job.
pub async fn fail(tx: Tx<'_>, job: &Claimed, failure: &Failure<'_>) -> Result<bool, sqlx::Error> {
    let changed = on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::FAIL)
            .bind(failure.permanent)
            .bind(failure.now)
            .bind(failure.delay_ms)
            .bind(failure.error)
            .bind(job.id)
            .bind(job.token)
            .bind(failure.dead_after_ms)
            .bind(failure.verdict.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::fail(job, failure)).await?,
    );
    Ok(changed == 1)
}

/// Renews worker `worker`'s lease: one row.
pub async fn heartbeat(
    tx: Tx<'_>,
    worker: i64,
    lease: Duration,
    now: Option<Millis>,
) -> Result<(), sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::HEARTBEAT)
            .bind(worker)
            .bind(now)
            .bind(lease.as_millis() as i64)
            .bind(lifecycle::worker_label())
            .execute(&mut *conn)
            .await
            .map(drop)?,
        sqlite = |conn| lite::execute(conn, bind::heartbeat(worker, lease, now))
            .await
            .map(drop)?,
    );
    Ok(())
}

/// Forgets a worker that stopped (its jobs finished or were failed). On PostgreSQL a worker
/// under whose id jobs still run (their outcome could not be recorded) is made to lapse
/// instead, so that the next rescue finds them from its row.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
pub async fn retire(tx: Tx<'_>, worker: i64, now: Option<Millis>) -> Result<(), sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::RETIRE)
            .bind(worker)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(drop)?,
        sqlite = |conn| lite::execute(conn, bind::retire(worker)).await.map(drop)?,
    );
    Ok(())
}

/// Returns the jobs of workers whose lease expired to the queue (suspects from now on), and
/// forgets those workers once none of their jobs runs; how many jobs. On SQLite `watch`
/// judges the leases (see [`StaleWatch`]); PostgreSQL's clock does on PostgreSQL, where
/// `adopt` first gives a lapsed row to the workers that running jobs name and that left none
/// (a walk over the workers with running jobs: maintenance asks for it once per lease).
#[cfg_attr(not(feature = "sqlx-sqlite"), allow(unused_variables))]
pub async fn rescue(
    mut tx: Tx<'_>,
    me: i64,
    watch: &mut StaleWatch,
    retry: &RetryPolicy,
    adopt: bool,
    now: Option<Millis>,
) -> Result<u64, sqlx::Error> {
    match tx.reborrow() {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            use crate::postgres as sql;
            let (base, cap) = (retry.base.as_millis() as i64, retry.cap.as_millis() as i64);
            if adopt {
                sqlx::query(sql::ADOPT_WORKERS)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
            }
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
            use sqlx::Connection as _;
            // Under the write lock: the counters read are the ones the rescue acts on, and a
            // watch held up behind another transaction sees that it was.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let _ = adopt; // the rescue itself finds the jobs of workers that left no row
            let workers = lite::fetch(&mut tx, bind::workers(), bind::worker).await?;
            let stale = bind::stale_json(&watch.observe(me, &workers));
            let rescued = lite::execute(&mut tx, bind::rescue(&stale, retry, now)).await?;
            lite::execute(&mut tx, bind::prune_workers(&stale)).await?;
            tx.commit().await?;
            Ok(rescued)
        }
        Tx::__Job(_) => unreachable!("a rescue runs on the worker's own connection"),
    }
}

/// Reserves a due suspect of `handlers` for `worker`, due for at least `wait` (see
/// `RESERVE_SUSPECT`): whether it holds one, to run alone.
pub async fn reserve_suspect(
    tx: Tx<'_>,
    handlers: &str,
    worker: i64,
    wait: Duration,
    now: Option<Millis>,
) -> Result<bool, sqlx::Error> {
    let reserved = on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::RESERVE_SUSPECT)
            .bind(now)
            .bind(handlers)
            .bind(worker)
            .bind(wait.as_millis() as i64)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite =
            |conn| lite::execute(conn, bind::reserve_suspect(handlers, worker, wait, now)).await?,
    );
    Ok(reserved > 0)
}

/// Runs a savepoint statement (`SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO SAVEPOINT`).
pub async fn savepoint(tx: Tx<'_>, statement: &'static str) -> Result<(), sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::raw_sql(statement)
            .execute(&mut *conn)
            .await
            .map(drop)?,
        sqlite = |conn| sqlx::raw_sql(statement)
            .execute(&mut *conn)
            .await
            .map(drop)?,
    );
    Ok(())
}

/// Every dead job (of `handler`, if given) pending again, attempts reset; how many.
pub(crate) async fn retry_dead(
    tx: Tx<'_>,
    handler: Option<&str>,
    now: Option<Millis>,
) -> Result<u64, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::RETRY_DEAD)
            .bind(now)
            .bind(handler)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::retry_dead(handler, now)).await?,
    ))
}

/// Deletes done jobs that finished before `before`, taking them off the done counts; how many.
/// In statements (transactions on SQLite) of at most 10,000 rows each.
pub(crate) async fn purge_done(mut tx: Tx<'_>, before: Millis) -> Result<u64, sqlx::Error> {
    let mut purged = 0;
    loop {
        let deleted = purge_done_batch(tx.reborrow(), before).await?;
        purged += deleted;
        if deleted < crate::sqlite_sql::PURGE_BATCH {
            return Ok(purged);
        }
    }
}

/// Deletes up to 10,000 done jobs that finished before `before`, taking them off the done
/// counts in the same transaction; how many.
pub(crate) async fn purge_done_batch(tx: Tx<'_>, before: Millis) -> Result<u64, sqlx::Error> {
    Ok(match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            let deleted: i64 = sqlx::query_scalar(crate::postgres::PURGE_DONE)
                .bind(before)
                .fetch_one(&mut *conn)
                .await?;
            deleted as u64
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            use sqlx::Connection as _;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let handlers =
                lite::fetch(&mut tx, bind::purge_done(before), bind::text_or_null).await?;
            if let Some(count) = bind::count_done(handlers.iter().flatten(), -1) {
                lite::execute(&mut tx, count).await?;
            }
            tx.commit().await?;
            handlers.len() as u64
        }
        Tx::__Job(_) => unreachable!("a purge runs on a pooled connection"),
    })
}

/// Makes the due `scheduled` jobs of `handlers` available, waking the schema's listeners when
/// some were; how many. Only PostgreSQL has the state: SQLite's claim reads `run_at`.
pub async fn promote(tx: Tx<'_>, handlers: &str, now: Option<Millis>) -> Result<u64, sqlx::Error> {
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            use crate::postgres as sql;
            let mut promoted = 0;
            loop {
                let rows = sqlx::query(sql::PROMOTE)
                    .bind(now)
                    .bind(handlers)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                promoted += rows;
                if rows < 1000 {
                    break;
                }
            }
            if promoted > 0 {
                sqlx::query(sql::WAKE).execute(&mut *conn).await?;
            }
            Ok(promoted)
        }
        _ => {
            let _ = (handlers, now);
            Ok(0)
        }
    }
}

/// The due jobs of the publishing functions `handlers`: how many, and the oldest's due time
/// (`now` is SQLite's; PostgreSQL's `available` rows are due).
#[cfg_attr(not(feature = "sqlx-sqlite"), allow(unused_variables))]
pub(crate) async fn outbox_backlog(
    tx: Tx<'_>,
    handlers: &str,
    now: Option<Millis>,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres::OUTBOX_BACKLOG)
            .bind(handlers)
            .fetch_one(&mut *conn)
            .await,
        sqlite =
            |conn| lite::fetch_one(conn, bind::outbox_backlog(handlers, now), bind::backlog).await,
    )
}

/// 1 while a job of `handlers` is due, waits out a retry, or runs, else 0 (a job not yet due
/// for its first attempt does not count).
pub async fn busy(tx: Tx<'_>, handlers: &str, now: Option<Millis>) -> Result<i64, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query_scalar(crate::postgres::BUSY)
            .bind(handlers)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?,
        sqlite = |conn| lite::fetch_one(conn, bind::busy(handlers, now), bind::int).await?,
    ))
}

/// The waiting jobs of the signal `name`: (id, handler, queue, payload, event id).
#[cfg(feature = "testing")]
pub(crate) async fn waiting_of_signal(
    tx: Tx<'_>,
    name: &str,
) -> Result<Vec<crate::job::WaitingRow>, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres::WAITING_OF_SIGNAL)
            .bind(name)
            .fetch_all(&mut *conn)
            .await?,
        sqlite = |conn| lite::fetch(conn, bind::waiting_of_signal(name), bind::waiting).await?,
    ))
}

/// The rows of the stats query: (handler, state, count, oldest creation time).
pub(crate) async fn stats(tx: Tx<'_>) -> Result<Vec<StatRow>, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres::STATS)
            .fetch_all(&mut *conn)
            .await?,
        sqlite = |conn| lite::fetch(conn, bind::stats(), bind::stat).await?,
    ))
}

/// Up to `limit` dead jobs with an id above `after`: (id, handler, attempt, last error,
/// payload).
pub(crate) async fn dead_jobs(
    tx: Tx<'_>,
    after: i64,
    limit: u32,
) -> Result<Vec<DeadJobRow>, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres::DEAD_JOBS)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?,
        sqlite = |conn| lite::fetch(conn, bind::dead_jobs(after, limit), bind::dead_job).await?,
    ))
}

/// Creates the schema, or brings it up to date; see [`AsyncQueue::migrate`]. A schema already
/// current is only read: no lock is taken on the jobs table. A schema newer than this crate is
/// refused before anything changes.
///
/// [`AsyncQueue::migrate`]: crate::AsyncQueue::migrate
pub async fn migrate(pool: &crate::db::Pool) -> Result<(), Error> {
    match pool {
        #[cfg(feature = "postgres")]
        crate::db::Pool::Postgres(pool) => {
            use sqlx::Connection as _;
            // The migration holds a session lock and runs `CONCURRENTLY` outside transactions:
            // on a connection taken out of the pool and closed at the end, so that an error
            // half way cannot leave the lock held on a pooled connection.
            let mut conn = pool.acquire().await?.detach();
            let result = migrate_postgres(&mut conn).await;
            let _ = conn.close().await;
            result
        }
        #[cfg(feature = "sqlx-sqlite")]
        crate::db::Pool::Sqlite(pool) => migrate_sqlite(&mut *pool.acquire().await?).await,
    }
}

/// Checks, reading only, that the schema is one this release works with: what a worker,
/// relay or subscriber does at `build()` in place of migrating.
pub async fn check_schema(pool: &crate::db::Pool) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    match conn.tx() {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => {
            use crate::postgres as sql;
            match postgres_schema(conn).await?.map(|(_, applied)| applied) {
                Some(found) if found >= sql::SCHEMA_VERSION => Ok(()),
                found => Err(Error::SchemaOutdated {
                    found,
                    needed: sql::SCHEMA_VERSION,
                }),
            }
        }
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => {
            use crate::sqlite_sql as sql;
            let (level, applied) = sqlite_schema(conn).await?;
            match sql::is_current(level, applied)? {
                true => Ok(()),
                false => Err(sql::outdated(level, applied)),
            }
        }
        Tx::__Job(_) => unreachable!("a pooled connection is never a job's transaction"),
    }
}

/// Refuses a pool behind a pooler in transaction mode, which breaks sqlx's prepared statements,
/// LISTEN and session locks: two connections, one holding a transaction (so pinning a server)
/// while the other runs a statement, then releasing it before the other runs a second; through
/// a transaction-mode pooler the second statement lands on the server just released (PgBouncer
/// reuses the most recently released server), so the two report different backends. Simple
/// queries only: no prepared statement that could itself break. Not detected: a pooler with a
/// single server (the second connection cannot run while the first holds it), or a pool of one
/// connection.
pub async fn check_session(pool: &crate::db::Pool) -> Result<(), Error> {
    #[cfg(feature = "postgres")]
    #[allow(irrefutable_let_patterns)] // without `sqlx-sqlite`
    if let crate::db::Pool::Postgres(pool) = pool {
        use sqlx::{Connection as _, Row as _};
        if pool.options().get_max_connections() < 2 {
            return Ok(()); // cannot hold one connection and use another
        }
        async fn backend(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
            sqlx::raw_sql("SELECT pg_backend_pid()")
                .fetch_one(conn)
                .await?
                .try_get(0)
        }
        let mut holder = pool.acquire().await?;
        let mut other = pool.acquire().await?;
        let mut tx = holder.begin().await?;
        backend(&mut tx).await?;
        let Ok(first) = tokio::time::timeout(Duration::from_secs(3), backend(&mut other)).await
        else {
            other.close_on_drop();
            return Ok(());
        };
        let first = first?;
        tx.commit().await?;
        let second = backend(&mut other).await?;
        if first != second {
            return Err(Error::TransactionPooler);
        }
    }
    let _ = pool;
    Ok(())
}

/// The compatibility level and the newest migration, `None` before the first migration;
/// refuses a level newer than this release.
#[cfg(feature = "postgres")]
async fn postgres_schema(conn: &mut sqlx::PgConnection) -> Result<Option<(i64, i64)>, Error> {
    use crate::postgres as sql;
    let exists: bool = sqlx::query_scalar(sql::HAS_SCHEMA)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    let level: Option<i64> = sqlx::query_scalar(sql::LEVEL).fetch_one(&mut *conn).await?;
    let has_migrations: bool = sqlx::query_scalar(sql::HAS_MIGRATIONS)
        .fetch_one(&mut *conn)
        .await?;
    // No migrations table, or one a migration cut off half way left empty: the level is what
    // ran (each level's migrations ran whole).
    let applied: Option<i64> = match has_migrations {
        true => sqlx::query_scalar::<_, Option<i64>>(sql::APPLIED)
            .fetch_one(&mut *conn)
            .await?
            .or(level),
        false => level,
    };
    let (Some(level), Some(applied)) = (level, applied) else {
        return Ok(None);
    };
    if level > sql::SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: level,
            known: sql::SCHEMA_VERSION,
        });
    }
    Ok(Some((level, applied)))
}

/// How long a migration step that locks the jobs table waits for the lock before it gives way
/// (every writer queues behind a waiting `ALTER TABLE`), and how often it tries.
#[cfg(feature = "postgres")]
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";
#[cfg(feature = "postgres")]
const LOCK_TRIES: u32 = 60;

#[cfg(feature = "postgres")]
async fn migrate_postgres(conn: &mut sqlx::PgConnection) -> Result<(), Error> {
    use crate::postgres as sql;
    // Reads first: a current schema takes no lock.
    if let Some((_, applied)) = postgres_schema(conn).await? {
        if applied >= sql::SCHEMA_VERSION {
            return Ok(());
        }
    }
    // Another process migrating holds this until it is done: wait for it, then look again.
    // Polled between statements, so that this session holds no snapshot while it waits: the
    // holder's `CREATE INDEX CONCURRENTLY` waits for every older snapshot to go.
    let mut pause = Duration::from_millis(20);
    while !sqlx::query_scalar::<_, bool>(sql::TRY_LOCK)
        .fetch_one(&mut *conn)
        .await?
    {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    // `IF EXISTS`/`IF NOT EXISTS` statements would send a notice each ("… does not exist,
    // skipping"), which sqlx logs: not news to anyone. The connection is closed after.
    sqlx::raw_sql("SET client_min_messages = warning")
        .execute(&mut *conn)
        .await?;
    let result = migrate_postgres_locked(conn).await;
    let unlocked = sqlx::query(sql::UNLOCK).execute(&mut *conn).await;
    result?;
    unlocked?;
    Ok(())
}

#[cfg(feature = "postgres")]
async fn migrate_postgres_locked(conn: &mut sqlx::PgConnection) -> Result<(), Error> {
    use crate::postgres as sql;
    use sqlx::Connection as _;
    let applied = postgres_schema(conn).await?.map(|(_, applied)| applied);
    if applied.is_some_and(|applied| applied >= sql::SCHEMA_VERSION) {
        return Ok(());
    }
    sqlx::raw_sql(sql::MIGRATION_TABLES)
        .execute(&mut *conn)
        .await?;
    // What ran before the migrations table existed (the level a release before it recorded).
    for (version, _) in sql::MIGRATIONS {
        if applied.is_some_and(|applied| applied >= *version) {
            sqlx::query(sql::MIGRATED)
                .bind(*version as i32)
                .execute(&mut *conn)
                .await?;
        }
    }
    // A `CREATE INDEX CONCURRENTLY` that failed left an invalid index its `IF NOT EXISTS`
    // would keep: drop it to build it again.
    let invalid: Vec<String> = sqlx::query_scalar(sql::INVALID_INDEX)
        .fetch_all(&mut *conn)
        .await?;
    for index in invalid {
        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS \"{index}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut *conn)
            .await?;
    }
    let jobs_exist: bool = sqlx::query_scalar(sql::JOBS_EXIST)
        .fetch_one(&mut *conn)
        .await?;
    if applied.is_none() && !jobs_exist {
        // New tables: every step in one transaction, indexes built on empty tables.
        let mut tx = conn.begin().await?;
        for (version, steps) in sql::MIGRATIONS {
            for step in *steps {
                let plain = step.sql.replace(" CONCURRENTLY", "");
                sqlx::raw_sql(sqlx::AssertSqlSafe(plain))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(sql::MIGRATED)
                .bind(*version as i32)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(sql::SET_VERSION)
            .bind(sql::COMPATIBLE_FROM as i32)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(());
    }
    for (version, steps) in sql::MIGRATIONS {
        if applied.is_some_and(|applied| applied >= *version) {
            continue;
        }
        for step in *steps {
            if step.concurrent {
                sqlx::raw_sql(step.sql).execute(&mut *conn).await?;
                continue;
            }
            let mut tries = 0;
            loop {
                let mut tx = conn.begin().await?;
                sqlx::raw_sql(LOCK_TIMEOUT).execute(&mut *tx).await?;
                match sqlx::raw_sql(step.sql).execute(&mut *tx).await {
                    Ok(_) => {
                        tx.commit().await?;
                        break;
                    }
                    Err(error) if is_lock_timeout(&error) && tries + 1 < LOCK_TRIES => {
                        drop(tx);
                        tries += 1;
                        crate::trace::database_error(
                            "migration (a transaction holds the jobs table; trying again)",
                            &error.into(),
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        sqlx::query(sql::MIGRATED)
            .bind(*version as i32)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(sql::SET_VERSION)
        .bind(sql::COMPATIBLE_FROM as i32)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// PostgreSQL's `lock_not_available`: a `lock_timeout` ran out.
#[cfg(feature = "postgres")]
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}

/// A SQLite file's level and newest migration (see [`is_current`](crate::sqlite_sql::is_current)).
#[cfg(feature = "sqlx-sqlite")]
async fn sqlite_schema(
    conn: &mut sqlx::SqliteConnection,
) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
    use bind::schema;
    if lite::fetch_one(conn, schema::exists(), bind::int).await? == 0 {
        return Ok((None, None));
    }
    let level = lite::fetch_one(conn, schema::level(), bind::int_or_null).await?;
    let applied = match lite::fetch_one(conn, schema::has_migrations(), bind::int).await? {
        0 => None,
        _ => lite::fetch_one(conn, schema::applied(), bind::int_or_null).await?,
    };
    Ok((level, applied))
}

#[cfg(feature = "sqlx-sqlite")]
async fn migrate_sqlite(conn: &mut sqlx::SqliteConnection) -> Result<(), Error> {
    use crate::sqlite_sql as sql;
    use sqlx::Connection as _;
    // Reads first (in WAL a read never waits for a writer): a current schema takes no lock.
    let (level, applied) = sqlite_schema(conn).await?;
    if sql::is_current(level, applied)? {
        return Ok(());
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let (level, applied) = sqlite_schema(&mut tx).await?;
    if sql::is_current(level, applied)? {
        return Ok(()); // another process migrated meanwhile
    }
    sqlx::raw_sql(sql::SCHEMA).execute(&mut *tx).await?;
    for (table, column, add) in sql::ADDED_COLUMNS {
        let has = bind::schema::has_column(table, column);
        if lite::fetch_one(&mut tx, has, bind::int).await? == 0 {
            sqlx::query(add).execute(&mut *tx).await?;
        }
    }
    sqlx::raw_sql(sql::INDEXES).execute(&mut *tx).await?;
    sqlx::raw_sql(sql::FOLD).execute(&mut *tx).await?;
    if level.is_none_or(|level| level < sql::COMPATIBLE_FROM) {
        lite::execute(&mut tx, bind::schema::set_level(sql::COMPATIBLE_FROM)).await?;
    }
    sqlx::raw_sql(sql::MIGRATED).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
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

/// Deletes up to 10,000 of a consumer's inbox rows received before `$2`, through the inbox's
/// time index.
#[cfg(feature = "async")]
const INBOX_PRUNE: &str = "
DELETE FROM signals_inbox WHERE (consumer, message_id) IN (
    SELECT consumer, message_id FROM signals_inbox
    WHERE received_at < $2 AND consumer = $1 LIMIT 10000)";

/// Forgets a consumer's inbox rows received before `before`, 10,000 rows a statement; how
/// many.
#[cfg(feature = "async")]
pub async fn inbox_prune(
    mut tx: Tx<'_>,
    consumer: &str,
    before: Millis,
) -> Result<u64, sqlx::Error> {
    let mut pruned = 0;
    loop {
        let deleted = on!(
            tx.reborrow(),
            either = |conn| {
                sqlx::query(INBOX_PRUNE)
                    .bind(consumer)
                    .bind(before)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            }
        );
        pruned += deleted;
        if deleted < 10_000 {
            return Ok(pruned);
        }
    }
}

/// Records a message in the inbox; whether it was new.
#[cfg(feature = "async")]
pub async fn inbox_insert(tx: Tx<'_>, row: &InboxRow<'_>) -> Result<bool, sqlx::Error> {
    let inserted = on!(
        tx,
        either = |conn| {
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
        }
    );
    Ok(inserted == 1)
}

/// A consumer's inbox counts: (state, rows).
#[cfg(feature = "async")]
pub async fn inbox_counts(tx: Tx<'_>, consumer: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    Ok(on!(
        tx,
        either = |conn| {
            sqlx::query_as(INBOX_COUNTS)
                .bind(consumer)
                .fetch_all(&mut *conn)
                .await?
        }
    ))
}

/// One failed attempt of a batch, as [`fail_many`] records it.
pub struct JobFailure<'a> {
    /// The job's row id.
    pub id: i64,
    /// The claim's token: the failure is recorded only while that claim holds the job.
    pub token: i64,
    /// The backoff before the next attempt.
    pub delay_ms: i64,
    /// The error, for `last_error`.
    pub error: &'a str,
}

/// Records the failed attempts of a batch in one statement: each job pending again after its
/// backoff, or dead (out of attempts, or written longer ago than `dead_after_ms`); jobs whose
/// claim no longer holds them are left alone. How many were recorded.
pub async fn fail_many(
    tx: Tx<'_>,
    failures: &[JobFailure<'_>],
    dead_after_ms: Option<i64>,
    now: Option<Millis>,
) -> Result<u64, sqlx::Error> {
    if failures.is_empty() {
        return Ok(0);
    }
    let items: Vec<(i64, i64, i64, &str)> = failures
        .iter()
        .map(|f| (f.id, f.token, f.delay_ms, f.error))
        .collect();
    let items = serde_json::to_string(&items).expect("failures serialize");
    Ok(on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres::FAIL_MANY)
            .bind(now)
            .bind(&items)
            .bind(dead_after_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::fail_many(items, dead_after_ms, now)).await?,
    ))
}

/// `sql` of `postgres_ops` bound over `selection`, in the parameters' order.
#[cfg(feature = "postgres")]
fn pg_selected<'q>(
    sql: &'static str,
    selection: &'q Selection<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(selection.now)
        .bind(selection.after)
        .bind(selection.ids.as_deref())
        .bind(selection.filter.handler.as_deref())
        .bind(selection.filter.queue.as_deref())
        .bind(selection.filter.state.map(|state| state.as_str()))
        .bind(selection.limit)
}

/// A listed row of `postgres_ops`.
#[cfg(feature = "postgres")]
fn pg_listed(row: &sqlx::postgres::PgRow) -> Result<ListedRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        i64::from(row.try_get::<i32, _>(4)?),
        i64::from(row.try_get::<i32, _>(5)?),
        row.try_get(6)?,
        row.try_get(7)?,
    ))
}

/// Up to `selection.limit` jobs of its filter after its cursor, by id.
pub(crate) async fn list_jobs(
    tx: Tx<'_>,
    selection: &Selection<'_>,
) -> Result<Vec<ListedRow>, sqlx::Error> {
    on!(
        tx,
        postgres = |conn| {
            let rows = pg_selected(crate::postgres_ops::JOBS, selection)
                .fetch_all(&mut *conn)
                .await?;
            rows.iter().map(pg_listed).collect()
        },
        sqlite = |conn| {
            let statement = bind::selected(crate::sqlite_ops::JOBS, selection);
            lite::fetch(conn, statement, bind::listed).await
        },
    )
}

/// One job with its payload and attempts; `None` if there is no such job.
pub(crate) async fn job(
    tx: Tx<'_>,
    id: i64,
    now: Option<Millis>,
) -> Result<Option<JobDetail>, sqlx::Error> {
    on!(
        tx,
        postgres = |conn| {
            use sqlx::Row as _;
            let row = sqlx::query(crate::postgres_ops::JOB)
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(|row| {
                Ok(JobDetail::from_row(
                    pg_listed(&row)?,
                    row.try_get(8)?,
                    row.try_get(9)?,
                    crate::ops::LastClaim {
                        started_at: row.try_get(10)?,
                        finished_at: row.try_get(11)?,
                        worker: row.try_get(12)?,
                    },
                ))
            })
            .transpose()
        },
        sqlite = |conn| {
            let rows = lite::fetch(conn, bind::job(now, id), bind::job_detail).await?;
            Ok(rows.into_iter().next())
        },
    )
}

/// One chunk of `action` over `selection`: the ids it changed, or (`dry_run`) would change.
pub(crate) async fn act(
    tx: Tx<'_>,
    action: Action,
    selection: &Selection<'_>,
    dry_run: bool,
) -> Result<Vec<i64>, sqlx::Error> {
    on!(
        tx,
        postgres = |conn| {
            use crate::postgres_ops as sql;
            let statement = match (action, dry_run) {
                (Action::Retry, false) => sql::RETRY,
                (Action::Retry, true) => sql::RETRY_CHUNK,
                (Action::Discard, false) => sql::DISCARD,
                (Action::Discard, true) => sql::DISCARD_CHUNK,
                (Action::Cancel, false) => sql::CANCEL,
                (Action::Cancel, true) => sql::CANCEL_CHUNK,
            };
            let ids: Vec<i64> = pg_selected(statement, selection)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| sqlx::Row::try_get(row, 0))
                .collect::<Result<_, _>>()?;
            if action == Action::Cancel && !dry_run && !ids.is_empty() {
                // Running ones' workers drop them at once (they also look every tick).
                sqlx::query(crate::postgres::CANCEL_NOTIFY)
                    .bind(lifecycle::ids_json(&ids))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(ids)
        },
        sqlite = |conn| {
            let statement = crate::sqlite_ops::action_sql(action, dry_run);
            lite::fetch(conn, bind::selected(statement, selection), bind::int).await
        },
    )
}

/// The counts by queue, handler and word, and the queues an operator paused or resumed.
pub(crate) async fn overview(
    mut tx: Tx<'_>,
    now: Option<Millis>,
) -> Result<OverviewRows, sqlx::Error> {
    on!(
        tx.reborrow(),
        postgres = |conn| {
            let rows = sqlx::query_as(crate::postgres_ops::OVERVIEW)
                .bind(now)
                .fetch_all(&mut *conn)
                .await?;
            let queues = sqlx::query_as(crate::postgres_ops::QUEUES)
                .fetch_all(&mut *conn)
                .await?;
            Ok((rows, queues))
        },
        sqlite = |conn| {
            let rows = lite::fetch(conn, bind::overview(now), bind::overview_row).await?;
            let queues = lite::fetch(conn, bind::queues(), bind::queue_row).await?;
            Ok((rows, queues))
        },
    )
}

/// The queues an operator paused.
pub(crate) async fn paused_queues(tx: Tx<'_>) -> Result<Vec<String>, sqlx::Error> {
    let queues: Vec<(String, bool)> = on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres_ops::QUEUES)
            .fetch_all(&mut *conn)
            .await?,
        sqlite = |conn| lite::fetch(conn, bind::queues(), bind::queue_row).await?,
    );
    Ok(queues
        .into_iter()
        .filter(|(_, paused)| *paused)
        .map(|(name, _)| name)
        .collect())
}

/// Pauses or resumes `queue` for every worker.
pub(crate) async fn set_paused(
    tx: Tx<'_>,
    queue: &str,
    paused: bool,
    now: Option<Millis>,
) -> Result<(), sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres_ops::SET_PAUSED)
            .bind(queue)
            .bind(paused)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(drop),
        sqlite = |conn| lite::execute(conn, bind::set_paused(queue, paused, now))
            .await
            .map(drop),
    )
}

/// Takes or renews the fleet's leadership for `worker`, for `lease`: the time it was judged at
/// (the server's clock on PostgreSQL) when the worker leads.
pub(crate) async fn elect(
    tx: Tx<'_>,
    worker: i64,
    lease: Duration,
    now: Option<Millis>,
) -> Result<Option<Millis>, sqlx::Error> {
    let lease = lease.as_millis() as i64;
    on!(
        tx,
        postgres = |conn| sqlx::query_scalar(crate::postgres_ops::ELECT)
            .bind(worker)
            .bind(lease)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await,
        sqlite = |conn| Ok(
            lite::fetch(conn, bind::elect(worker, lease, now), bind::int)
                .await?
                .pop()
        ),
    )
}

/// Up to 100 dead jobs whose death was not announced.
pub(crate) async fn unannounced(tx: Tx<'_>) -> Result<Vec<crate::job::DeathRow>, sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query_as(crate::postgres_ops::UNANNOUNCED)
            .fetch_all(&mut *conn)
            .await,
        sqlite = |conn| lite::fetch(conn, bind::unannounced(), bind::death).await,
    )
}

/// Marks the death of `id` (finished at `finished_at`) announced in the caller's transaction:
/// whether it was not yet.
pub(crate) async fn announce(
    tx: Tx<'_>,
    id: i64,
    finished_at: Millis,
) -> Result<bool, sqlx::Error> {
    let changed = on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres_ops::ANNOUNCE)
            .bind(id)
            .bind(finished_at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::announce(id, finished_at)).await?,
    );
    Ok(changed == 1)
}

/// Gives the leadership up, if `worker` holds it.
pub(crate) async fn resign(tx: Tx<'_>, worker: i64) -> Result<(), sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres_ops::RESIGN)
            .bind(worker)
            .execute(&mut *conn)
            .await
            .map(drop),
        sqlite = |conn| lite::execute(conn, bind::resign(worker)).await.map(drop),
    )
}

/// The latest tick of `signal` that fired.
pub(crate) async fn last_tick(tx: Tx<'_>, signal: &str) -> Result<Option<Millis>, sqlx::Error> {
    on!(
        tx,
        postgres = |conn| sqlx::query_scalar(crate::postgres_ops::LAST_TICK)
            .bind(signal)
            .fetch_one(&mut *conn)
            .await,
        sqlite = |conn| lite::fetch_one(conn, bind::last_tick(signal), bind::int_or_null).await,
    )
}

/// Records the tick `tick` of `signal` in the caller's transaction, unless it or a later one
/// was: whether this worker fires it.
pub(crate) async fn record_tick(
    tx: Tx<'_>,
    signal: &str,
    tick: Millis,
    worker: i64,
    now: Option<Millis>,
) -> Result<bool, sqlx::Error> {
    let inserted = on!(
        tx,
        postgres = |conn| sqlx::query(crate::postgres_ops::TICK)
            .bind(signal)
            .bind(tick)
            .bind(worker)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        sqlite = |conn| lite::execute(conn, bind::tick(signal, tick, worker, now)).await?,
    );
    Ok(inserted == 1)
}

/// Records the handlers a worker (or relay) runs, for tools that link none of them.
pub(crate) async fn record_handlers(
    mut tx: Tx<'_>,
    jobs: &[&'static JobInfo],
    now: Option<Millis>,
) -> Result<(), sqlx::Error> {
    for job in jobs {
        on!(
            tx.reborrow(),
            postgres = |conn| sqlx::query(crate::postgres_ops::RECORD_HANDLER)
                .bind(job.name())
                .bind(job.signal_path())
                .bind(job.queue())
                .bind(job.max_attempts() as i32)
                .bind(job.kind())
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(drop)?,
            sqlite = |conn| lite::execute(conn, bind::record_handler(job, now))
                .await
                .map(drop)?,
        );
    }
    Ok(())
}

/// Of the jobs `ids`, those an operator cancelled.
pub(crate) async fn cancelled_of(tx: Tx<'_>, ids: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = lifecycle::ids_json(ids);
    on!(
        tx,
        postgres = |conn| sqlx::query_scalar(crate::postgres_ops::CANCELLED_OF)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await,
        sqlite = |conn| lite::fetch(conn, bind::cancelled_of(ids), bind::int).await,
    )
}

/// Deletes the dead, discarded and cancelled jobs that finished before `before`, 10,000 rows a
/// statement; how many.
pub(crate) async fn purge_finished(mut tx: Tx<'_>, before: Millis) -> Result<u64, sqlx::Error> {
    let mut purged = 0;
    loop {
        let deleted = purge_finished_batch(tx.reborrow(), before).await?;
        purged += deleted;
        if deleted < crate::sqlite_sql::PURGE_BATCH {
            return Ok(purged);
        }
    }
}

/// Deletes up to 10,000 dead, discarded and cancelled jobs that finished before `before`; how
/// many.
pub(crate) async fn purge_finished_batch(tx: Tx<'_>, before: Millis) -> Result<u64, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| {
            let deleted: i64 = sqlx::query_scalar(crate::postgres_ops::PURGE_FINISHED)
                .bind(before)
                .fetch_one(&mut *conn)
                .await?;
            deleted as u64
        },
        sqlite = |conn| lite::execute(conn, bind::purge_finished(before)).await?,
    ))
}

/// Deletes up to 10,000 ticks of periodic signals recorded before `before`, each signal's
/// latest kept; how many.
pub(crate) async fn prune_ticks_batch(tx: Tx<'_>, before: Millis) -> Result<u64, sqlx::Error> {
    Ok(on!(
        tx,
        postgres = |conn| {
            let deleted: i64 = sqlx::query_scalar(crate::postgres_ops::PRUNE_TICKS)
                .bind(before)
                .fetch_one(&mut *conn)
                .await?;
            deleted as u64
        },
        sqlite = |conn| lite::execute(conn, bind::prune_ticks(before)).await?,
    ))
}
