//! Operating the queue: stats, dead jobs, retries and purges, over a connection to the jobs
//! table.

use std::collections::BTreeMap;
use std::time::Duration;

#[cfg(feature = "sqlite")]
use rusqlite::Connection;

use crate::clock::Clock;
use crate::error::Error;
use crate::job::JobState;
use crate::ops::{
    next_chunk, Action, JobDetail, JobFilter, JobSummary, Overview, Selection, ACTION_CHUNK,
};
use crate::registry::jobs;
#[cfg(feature = "sqlite")]
use crate::sqlite;

/// The jobs table, for operators: [`stats`](Self::stats), [`dead_jobs`](Self::dead_jobs),
/// [`retry_dead`](Self::retry_dead), [`purge_done`](Self::purge_done).
///
/// # Examples
///
/// ```
/// use signals_queue::Queue;
///
/// let queue = Queue::open_in_memory()?;
/// queue.migrate()?;
/// assert!(queue.stats()?.handlers.is_empty());
/// # Ok::<(), signals_queue::Error>(())
/// ```
#[cfg(feature = "sqlite")]
pub struct Queue {
    conn: Connection,
    clock: Clock,
}

/// The jobs of one handler, by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Waiting to run, now or after a retry's backoff.
    pub pending: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Completed and not yet purged, from `signals_job_counts`: the statement (or transaction)
    /// that completes jobs counts them there, and `purge_done` takes off what it deletes, so
    /// reading it never counts done rows. Jobs a release before these counts completed are not
    /// in it.
    pub done: u64,
    /// Out of attempts or not runnable.
    pub dead: u64,
    /// How long the oldest pending job has existed.
    pub oldest_pending: Option<Duration>,
    /// Whether a queued handler of that name is linked into this program. Jobs of a handler no
    /// binary links stay untouched: rename with `name = "..."` to keep them across a move.
    pub linked: bool,
}

/// Job counts per handler and state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per handler name, sorted by name.
    pub handlers: BTreeMap<String, HandlerStats>,
}

impl Stats {
    /// The jobs in `state`, over every handler.
    pub fn total(&self, state: JobState) -> u64 {
        self.handlers
            .values()
            .map(|h| match state {
                JobState::Pending => h.pending,
                JobState::Running => h.running,
                JobState::Done => h.done,
                JobState::Dead => h.dead,
            })
            .sum()
    }
}

/// A dead job, with what killed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadJob {
    /// The job's id.
    pub id: i64,
    /// The handler it was for.
    pub handler: String,
    /// How many attempts it had.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The signal, as JSON.
    pub payload: String,
}

impl DeadJob {
    /// A row of the dead-job listing: (id, handler, attempt, last error, payload).
    fn from_row((id, handler, attempts, last_error, payload): crate::job::DeadJobRow) -> DeadJob {
        DeadJob {
            id,
            handler,
            attempts: attempts.max(0) as u32,
            last_error,
            payload,
        }
    }
}

#[cfg(feature = "sqlite")]
impl Queue {
    /// Opens the jobs database at `path` (WAL, with a busy timeout).
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Queue, Error> {
        Ok(Queue {
            conn: sqlite::open(path.as_ref(), crate::timing::SQLITE_BUSY_TIMEOUT)?,
            clock: Clock::system(),
        })
    }

    /// A queue in a private in-memory database, for examples and tests.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn open_in_memory() -> Result<Queue, Error> {
        Ok(Queue {
            conn: Connection::open_in_memory()?,
            clock: Clock::system(),
        })
    }

    /// Reads the time from `clock` (for tests).
    pub fn with_clock(mut self, clock: Clock) -> Queue {
        self.clock = clock;
        self
    }

    /// The connection, for the application's own statements.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Creates or checks the jobs table; see [`migrate`](crate::migrate).
    ///
    /// # Errors
    ///
    /// As for [`migrate`](crate::migrate).
    pub fn migrate(&self) -> Result<(), Error> {
        sqlite::migrate(&self.conn)
    }

    /// Job counts per handler and state, with the oldest pending job's age.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn stats(&self) -> Result<Stats, Error> {
        let now = self.clock.now();
        Stats::from_rows(sqlite::stats(&self.conn)?, now)
    }
}

impl Stats {
    /// The stats from `STATS`'s rows: (handler, state, count, oldest creation time).
    pub(crate) fn from_rows(
        rows: Vec<(String, String, i64, Option<i64>)>,
        now: i64,
    ) -> Result<Stats, Error> {
        let linked: Vec<&str> = jobs().map(|job| job.name()).collect();
        let mut stats = Stats::default();
        for (handler, state, count, oldest) in rows {
            let linked = linked.contains(&handler.as_str());
            let entry = stats.handlers.entry(handler).or_default();
            entry.linked = linked;
            let count = count as u64;
            match JobState::parse(&state) {
                Some(JobState::Pending) => {
                    entry.pending += count;
                    let age = oldest.map(|created| {
                        Duration::from_millis(now.saturating_sub(created).max(0) as u64)
                    });
                    entry.oldest_pending = entry.oldest_pending.max(age);
                }
                Some(JobState::Running) => entry.running += count,
                Some(JobState::Done) => entry.done += count,
                Some(JobState::Dead) => entry.dead += count,
                None => {}
            }
        }
        Ok(stats)
    }
}

#[cfg(feature = "sqlite")]
impl Queue {
    /// Up to `limit` dead jobs with an id above `after`, oldest first: `0` for the first
    /// page, then the last id of a page for the next. Each page is one index range read.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn dead_jobs(&self, after: i64, limit: u32) -> Result<Vec<DeadJob>, Error> {
        let rows = sqlite::dead_jobs(&self.conn, after, limit)?;
        Ok(rows.into_iter().map(DeadJob::from_row).collect())
    }

    /// Makes every dead job pending again, with its attempts reset; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn retry_dead(&self) -> Result<usize, Error> {
        Ok(sqlite::retry_dead(&self.conn, None, self.clock.fixed())?)
    }

    /// Makes the dead jobs of one handler (by job name) pending again; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn retry_dead_of(&self, handler: &str) -> Result<usize, Error> {
        Ok(sqlite::retry_dead(
            &self.conn,
            Some(handler),
            self.clock.fixed(),
        )?)
    }

    /// Deletes done jobs that finished more than `older_than` ago; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn purge_done(&self, older_than: Duration) -> Result<usize, Error> {
        let before = self.clock.now() - older_than.as_millis() as i64;
        Ok(sqlite::purge_done(&self.conn, before)?)
    }

    /// The jobs by queue and by handler in the operator's states; see
    /// [`AsyncQueue::overview`](crate::AsyncQueue::overview).
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn overview(&self) -> Result<Overview, Error> {
        let (rows, queues) = sqlite::overview(&self.conn, self.clock.fixed())?;
        Ok(Overview::from_rows(rows, queues, self.clock.now()))
    }

    /// Up to `limit` jobs that `filter` matches with an id above `after`, by id.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn jobs(
        &self,
        filter: &JobFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JobSummary>, Error> {
        let selection = Selection::page(self.clock.fixed(), filter, after, i64::from(limit));
        let rows = sqlite::list_jobs(&self.conn, &selection)?;
        Ok(rows.into_iter().map(JobSummary::from_row).collect())
    }

    /// One job with its payload and every attempt it had.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn job(&self, id: i64) -> Result<Option<JobDetail>, Error> {
        Ok(sqlite::job(&self.conn, id, self.clock.fixed())?)
    }

    /// Applies `action` to the jobs `ids`; see [`AsyncQueue::act_on`](crate::AsyncQueue::act_on).
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn act_on(&self, action: Action, ids: &[i64], dry_run: bool) -> Result<u64, Error> {
        let mut changed = 0;
        for chunk in ids.chunks(ACTION_CHUNK as usize) {
            let selection = Selection::ids(self.clock.fixed(), chunk);
            changed += sqlite::act(&self.conn, action, &selection, dry_run)?.len() as u64;
        }
        Ok(changed)
    }

    /// Applies `action` to every job `filter` matches, in chunks of 1,000; see
    /// [`AsyncQueue::act_on_all`](crate::AsyncQueue::act_on_all).
    ///
    /// # Errors
    ///
    /// A database error; the chunks before it stay changed.
    pub fn act_on_all(
        &self,
        action: Action,
        filter: &JobFilter,
        dry_run: bool,
    ) -> Result<u64, Error> {
        let mut changed = 0;
        let mut after = i64::MIN;
        loop {
            let selection = Selection::page(self.clock.fixed(), filter, after, ACTION_CHUNK);
            let ids = sqlite::act(&self.conn, action, &selection, dry_run)?;
            changed += ids.len() as u64;
            match next_chunk(&ids) {
                Some(last) => after = last,
                None => return Ok(changed),
            }
        }
    }

    /// Pauses `queue` for every worker; see [`AsyncQueue::pause`](crate::AsyncQueue::pause).
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn pause(&self, queue: &str) -> Result<(), Error> {
        Ok(sqlite::set_paused(
            &self.conn,
            queue,
            true,
            self.clock.fixed(),
        )?)
    }

    /// Resumes a paused `queue`.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn resume(&self, queue: &str) -> Result<(), Error> {
        Ok(sqlite::set_paused(
            &self.conn,
            queue,
            false,
            self.clock.fixed(),
        )?)
    }

    /// Deletes the dead, discarded and cancelled jobs that finished more than `older_than`
    /// ago, 10,000 a statement; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn purge_finished(&self, older_than: Duration) -> Result<u64, Error> {
        let before = self.clock.now() - older_than.as_millis() as i64;
        Ok(sqlite::purge_finished(&self.conn, before)?)
    }
}

/// The jobs table through sqlx (PostgreSQL or SQLite), for operators: the async twin of
/// [`Queue`].
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> Result<(), signals_queue::Error> {
/// use signals_queue::{AsyncQueue, JobState, Pool};
///
/// let queue = AsyncQueue::new(Pool::connect("postgres://127.0.0.1/shop", 2).await?);
/// queue.migrate().await?;
/// println!("{} dead jobs", queue.stats().await?.total(JobState::Dead));
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "async")]
pub struct AsyncQueue {
    pool: crate::db::Pool,
    clock: Clock,
}

#[cfg(feature = "async")]
impl AsyncQueue {
    /// The jobs table in `pool`'s database.
    pub fn new(pool: impl Into<crate::db::Pool>) -> AsyncQueue {
        AsyncQueue {
            pool: pool.into(),
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` (for tests).
    pub fn with_clock(mut self, clock: Clock) -> AsyncQueue {
        self.clock = clock;
        self
    }

    /// The pool, for the application's own statements.
    pub fn pool(&self) -> &crate::db::Pool {
        &self.pool
    }

    /// The migration step: creates the tables, or brings them up to this release's schema in
    /// place. Run it from a deploy step (or a command line) as a role allowed to change the
    /// schema, before starting workers: their `build()` only checks the schema
    /// ([`Error::SchemaOutdated`] until this ran) and needs no DDL rights.
    ///
    /// A schema already current is only read: no lock is taken. On PostgreSQL, two processes
    /// migrating at once take turns (an advisory lock); each step that locks the jobs table
    /// waits at most a second for that lock (while it waits every writer queues behind it),
    /// then gives way and tries again, for up to a minute; indexes are built `CONCURRENTLY`,
    /// while the application writes. No step rewrites the table. The migrated schema works
    /// with the release before this one during a rolling deploy (see `docs/production.md`).
    ///
    /// # Errors
    ///
    /// [`Error::SchemaTooNew`] if a newer version of this crate wrote the table (nothing is
    /// changed then); a database error, including a lock the jobs table never gave up.
    pub async fn migrate(&self) -> Result<(), Error> {
        crate::store::migrate(&self.pool).await
    }

    /// Job counts per handler and state, with the oldest pending job's age.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let mut conn = self.pool.acquire().await?;
        let rows = crate::store::stats(conn.tx()).await?;
        Stats::from_rows(rows, self.clock.now())
    }

    /// Up to `limit` dead jobs with an id above `after`, oldest first: `0` for the first
    /// page, then the last id of a page for the next. Each page is one index range read.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn dead_jobs(&self, after: i64, limit: u32) -> Result<Vec<DeadJob>, Error> {
        let mut conn = self.pool.acquire().await?;
        let rows = crate::store::dead_jobs(conn.tx(), after, limit).await?;
        Ok(rows.into_iter().map(DeadJob::from_row).collect())
    }

    /// Makes every dead job pending again, with its attempts reset; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn retry_dead(&self) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::retry_dead(conn.tx(), None, self.clock.fixed()).await?)
    }

    /// Makes the dead jobs of one handler (by job name, e.g. a publishing function's after a
    /// broker outage) pending again, with their attempts reset; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn retry_dead_of(&self, handler: &str) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::retry_dead(conn.tx(), Some(handler), self.clock.fixed()).await?)
    }

    /// Deletes done jobs that finished more than `older_than` ago; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn purge_done(&self, older_than: Duration) -> Result<u64, Error> {
        let before = self.clock.now() - older_than.as_millis() as i64;
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::purge_done(conn.tx(), before).await?)
    }

    /// The jobs by queue and by handler in the operator's states, each queue with whether it
    /// is paused and how long its oldest due job has waited. One read per partial index: no
    /// done row is read (done counts are kept as jobs complete).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn overview(&self) -> Result<Overview, Error> {
        let mut conn = self.pool.acquire().await?;
        let now = self.clock.fixed();
        let (rows, queues) = crate::store::overview(conn.tx(), now).await?;
        Ok(Overview::from_rows(rows, queues, self.clock.now()))
    }

    /// Up to `limit` jobs that `filter` matches with an id above `after`, by id: `0` for the
    /// first page, then the last id of a page. A walk of the table in id order: a filter that
    /// matches few of many rows reads many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn jobs(
        &self,
        filter: &JobFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JobSummary>, Error> {
        let selection = Selection::page(self.clock.fixed(), filter, after, i64::from(limit));
        let mut conn = self.pool.acquire().await?;
        let rows = crate::store::list_jobs(conn.tx(), &selection).await?;
        Ok(rows.into_iter().map(JobSummary::from_row).collect())
    }

    /// One job with its payload and every attempt it had; `None` if there is none with `id`.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn job(&self, id: i64) -> Result<Option<JobDetail>, Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::job(conn.tx(), id, self.clock.fixed()).await?)
    }

    /// Applies `action` to the jobs `ids` (those it applies to: see [`Action`]); how many
    /// changed. With `dry_run`, changes nothing and says how many would.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn act_on(&self, action: Action, ids: &[i64], dry_run: bool) -> Result<u64, Error> {
        let mut changed = 0;
        for chunk in ids.chunks(ACTION_CHUNK as usize) {
            let selection = Selection::ids(self.clock.fixed(), chunk);
            let mut conn = self.pool.acquire().await?;
            changed += crate::store::act(conn.tx(), action, &selection, dry_run)
                .await?
                .len() as u64;
        }
        Ok(changed)
    }

    /// Applies `action` to every job `filter` matches (those it applies to), in chunks of
    /// 1,000 jobs, a statement (and transaction) each, by id: never one statement over
    /// millions of rows. How many changed; with `dry_run`, how many would (the same chunks,
    /// read only).
    ///
    /// # Errors
    ///
    /// A database error; the chunks before it stay changed.
    pub async fn act_on_all(
        &self,
        action: Action,
        filter: &JobFilter,
        dry_run: bool,
    ) -> Result<u64, Error> {
        let mut changed = 0;
        let mut after = i64::MIN;
        loop {
            let selection = Selection::page(self.clock.fixed(), filter, after, ACTION_CHUNK);
            let mut conn = self.pool.acquire().await?;
            let ids = crate::store::act(conn.tx(), action, &selection, dry_run).await?;
            changed += ids.len() as u64;
            match next_chunk(&ids) {
                Some(last) => after = last,
                None => return Ok(changed),
            }
        }
    }

    /// Pauses `queue` for every worker of the fleet: within a tick (half a second by default)
    /// no worker claims its jobs; running ones finish. A row in the database.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn pause(&self, queue: &str) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::set_paused(conn.tx(), queue, true, self.clock.fixed()).await?)
    }

    /// Resumes a paused `queue`.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn resume(&self, queue: &str) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::set_paused(conn.tx(), queue, false, self.clock.fixed()).await?)
    }

    /// Deletes the dead, discarded and cancelled jobs that finished more than `older_than`
    /// ago, 10,000 a statement; how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<u64, Error> {
        let before = self.clock.now() - older_than.as_millis() as i64;
        let mut conn = self.pool.acquire().await?;
        Ok(crate::store::purge_finished(conn.tx(), before).await?)
    }
}
