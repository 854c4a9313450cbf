//! The async path's connections, on PostgreSQL or SQLite through sqlx: a pool ([`Pool`]), a
//! transaction of the application's ([`Transaction`]), a connection inside one ([`Tx`],
//! lazy on the worker), and a pooled connection outside any ([`OwnedConn`]). Nothing here
//! knows the jobs table: the stores above run its statements on these.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;

/// A boxed, sendable future: what the async worker runs per job.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection inside an open sqlx transaction, on either database: where `notify_async` writes
/// jobs and where the async worker runs a handler. Borrow it from a transaction with `.into()`:
/// `Tx::from(&mut *tx)` for a `sqlx::Transaction`, or from the connection itself.
///
/// On the [`AsyncWorker`](crate::AsyncWorker), the `Tx` a job's context gets is *lazy*: no
/// connection is taken from the pool, and no transaction begun, until the handler first uses
/// it ([`with_db!`](crate::with_db), [`postgres`](Tx::postgres), [`sqlite`](Tx::sqlite)),
/// so a handler waiting on the network before it writes holds no connection. If that first use
/// cannot open the transaction (the pool timed out, the database is down), the attempt fails
/// with the database's error: the handler's future is dropped where it awaited the
/// connection, and the job is retried after a backoff.
#[non_exhaustive]
pub enum Tx<'a> {
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
    /// A SQLite connection (sqlx).
    #[cfg(feature = "sqlx-sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
    /// Not public API: a job's transaction, opened at its first use.
    #[doc(hidden)]
    __Job(&'a mut JobTx),
}

impl<'a> Tx<'a> {
    /// The same connection, borrowed again for a shorter time.
    pub fn reborrow(&mut self) -> Tx<'_> {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(conn) => Tx::Postgres(conn),
            #[cfg(feature = "sqlx-sqlite")]
            Tx::Sqlite(conn) => Tx::Sqlite(conn),
            Tx::__Job(job) => Tx::__Job(job),
        }
    }

    /// Whether the connection is to PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(_) => true,
            Tx::__Job(job) => job.pool.is_postgres(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The PostgreSQL connection, once a job's lazy transaction is open (an `.await`: since
    /// the worker opens a job's transaction at its first use, this became `async`).
    ///
    /// # Errors
    ///
    /// [`WrongDatabase`] if it is a SQLite one.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "postgres")] mod doc {
    /// use signals_queue::Tx;
    ///
    /// pub async fn audit(tx: &mut Tx<'_>, order_id: i64) -> Result<(), signals_core::BoxError> {
    ///     let conn = tx.reborrow().postgres().await?;
    ///     sqlx::query("INSERT INTO audit (order_id) VALUES ($1)")
    ///         .bind(order_id)
    ///         .execute(conn)
    ///         .await?;
    ///     Ok(())
    /// }
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn postgres(self) -> Result<&'a mut sqlx::PgConnection, WrongDatabase> {
        match self.__opened().await {
            Tx::Postgres(conn) => Ok(conn),
            #[allow(unreachable_patterns)]
            _ => Err(WrongDatabase {
                expected: "PostgreSQL",
            }),
        }
    }

    /// The SQLite connection, once a job's lazy transaction is open (see
    /// [`postgres`](Self::postgres)).
    ///
    /// # Errors
    ///
    /// [`WrongDatabase`] if it is a PostgreSQL one.
    #[cfg(feature = "sqlx-sqlite")]
    pub async fn sqlite(self) -> Result<&'a mut sqlx::SqliteConnection, WrongDatabase> {
        match self.__opened().await {
            Tx::Sqlite(conn) => Ok(conn),
            #[allow(unreachable_patterns)]
            _ => Err(WrongDatabase { expected: "SQLite" }),
        }
    }

    /// Opens a job's lazy transaction, returning the error if it cannot be opened.
    pub(crate) async fn open(self) -> Result<Tx<'a>, sqlx::Error> {
        match self {
            Tx::__Job(job) => job.open().await,
            opened => Ok(opened),
        }
    }

    /// Not public API (used by [`with_db!`](crate::with_db)): the connection, a job's lazy
    /// transaction opened. If it cannot be opened, the error goes to the worker, which fails
    /// the attempt and drops the handler's future: this one never resolves.
    #[doc(hidden)]
    pub async fn __opened(self) -> Tx<'a> {
        match self {
            Tx::__Job(job) => job.open_or_abandon().await,
            opened => opened,
        }
    }
}

/// Not public API: a job's transaction on the [`AsyncWorker`](crate::AsyncWorker), begun at the
/// handler's first use of it.
#[doc(hidden)]
pub struct JobTx {
    pool: Pool,
    tx: Option<Transaction>,
    /// Where a failure to open goes: the worker fails the attempt.
    failed: Option<tokio::sync::oneshot::Sender<sqlx::Error>>,
}

impl JobTx {
    /// A job's transaction over `pool`, not yet begun; the receiver hears why it could not be.
    pub(crate) fn new(pool: Pool) -> (JobTx, tokio::sync::oneshot::Receiver<sqlx::Error>) {
        let (failed, why) = tokio::sync::oneshot::channel();
        let job = JobTx {
            pool,
            tx: None,
            failed: Some(failed),
        };
        (job, why)
    }

    /// The transaction, once the handler opened it.
    pub(crate) fn take(&mut self) -> Option<Transaction> {
        self.tx.take()
    }

    async fn open(&mut self) -> Result<Tx<'_>, sqlx::Error> {
        if self.tx.is_none() {
            self.tx = Some(self.pool.begin_job().await?);
        }
        Ok(self.tx.as_mut().expect("just opened").tx())
    }

    async fn open_or_abandon(&mut self) -> Tx<'_> {
        if self.tx.is_none() {
            match self.pool.begin_job().await {
                Ok(tx) => self.tx = Some(tx),
                Err(error) => {
                    if let Some(failed) = self.failed.take() {
                        let _ = failed.send(error);
                    }
                    std::future::pending::<()>().await;
                }
            }
        }
        self.tx.as_mut().expect("just opened").tx()
    }
}

#[cfg(feature = "postgres")]
impl<'a> From<&'a mut sqlx::PgConnection> for Tx<'a> {
    fn from(conn: &'a mut sqlx::PgConnection) -> Self {
        Tx::Postgres(conn)
    }
}

#[cfg(feature = "sqlx-sqlite")]
impl<'a> From<&'a mut sqlx::SqliteConnection> for Tx<'a> {
    fn from(conn: &'a mut sqlx::SqliteConnection) -> Self {
        Tx::Sqlite(conn)
    }
}

/// A context asked for a database it does not hold.
#[derive(Debug, thiserror::Error)]
#[error("the job's transaction is not on {expected}")]
pub struct WrongDatabase {
    expected: &'static str,
}

/// A pool of connections to the jobs' database: PostgreSQL or SQLite, through sqlx.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Pool {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// SQLite.
    #[cfg(feature = "sqlx-sqlite")]
    Sqlite(sqlx::SqlitePool),
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for Pool {
    fn from(pool: sqlx::PgPool) -> Self {
        Pool::Postgres(pool)
    }
}

#[cfg(feature = "sqlx-sqlite")]
impl From<sqlx::SqlitePool> for Pool {
    fn from(pool: sqlx::SqlitePool) -> Self {
        Pool::Sqlite(pool)
    }
}

impl Pool {
    /// Connects to `url`: `postgres://...` (or `postgresql://`), or `sqlite://path` (created if
    /// missing, in WAL mode with a 10 s busy timeout), with up to `connections` connections.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedUrl`] for another scheme (or one whose feature is off); a
    /// connection error.
    pub async fn connect(url: &str, connections: u32) -> Result<Pool, Error> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                use sqlx::{ConnectOptions as _, Connection as _};
                let options = url.parse::<sqlx::postgres::PgConnectOptions>()?;
                // One connection first: an unreachable server is its own error at once, not a
                // pool that times out after retrying for half a minute.
                options.connect().await?.close().await?;
                Ok(Pool::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(connections.max(1))
                        .connect_with(options)
                        .await?,
                ))
            }
            #[cfg(feature = "sqlx-sqlite")]
            "sqlite" => {
                use std::str::FromStr;
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(crate::timing::SQLITE_BUSY_TIMEOUT);
                Ok(Pool::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(connections.max(1))
                        .connect_with(options)
                        .await?,
                ))
            }
            _ => Err(Error::UnsupportedUrl(url.to_owned())),
        }
    }

    /// Begins a transaction for the application's own writes, on either database: hand its
    /// [`tx()`](Transaction::tx) to a signal's context, and [`commit`](Transaction::commit).
    /// On SQLite it begins `IMMEDIATE`, taking the write lock at once: a deferred transaction
    /// that reads and then writes fails with `SQLITE_BUSY`, without waiting, when another
    /// connection wrote in between.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        Ok(match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => Transaction::Postgres(pool.begin().await?),
            #[cfg(feature = "sqlx-sqlite")]
            Pool::Sqlite(pool) => Transaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// A job's transaction, begun at the handler's first use of it: `IMMEDIATE` on SQLite, so
    /// the write lock is taken then (a deferred transaction that read first would fail with
    /// `SQLITE_BUSY_SNAPSHOT` at its first write after another connection wrote).
    pub(crate) async fn begin_job(&self) -> Result<Transaction, sqlx::Error> {
        self.begin().await
    }

    /// A pool of `connections` of the worker's own, to the same database with the same
    /// options: the worker's fetches, completions, leases and rescues never wait behind the
    /// connections handlers and the application borrow. Opened at once, so that a server that
    /// cannot spare them is an error at `build()`.
    pub(crate) async fn dedicated(&self, connections: u32) -> Result<Pool, sqlx::Error> {
        Ok(match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(connections)
                    .min_connections(connections)
                    .acquire_timeout(OWN_ACQUIRE_TIMEOUT)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
            #[cfg(feature = "sqlx-sqlite")]
            Pool::Sqlite(pool) => Pool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(OWN_ACQUIRE_TIMEOUT)
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
        })
    }

    /// How many connections the pool may open.
    pub fn max_connections(&self) -> u32 {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.options().get_max_connections(),
            #[cfg(feature = "sqlx-sqlite")]
            Pool::Sqlite(pool) => pool.options().get_max_connections(),
        }
    }

    /// A connection of the pool, outside any transaction.
    pub(crate) async fn acquire(&self) -> Result<OwnedConn, sqlx::Error> {
        Ok(match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => OwnedConn::Postgres(pool.acquire().await?),
            #[cfg(feature = "sqlx-sqlite")]
            Pool::Sqlite(pool) => OwnedConn::Sqlite(pool.acquire().await?),
        })
    }

    /// Closes the pool's connections, waiting for those in use to come back.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.close().await,
            #[cfg(feature = "sqlx-sqlite")]
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    /// Whether this is a PostgreSQL pool (which wakes workers with LISTEN/NOTIFY).
    pub fn is_postgres(&self) -> bool {
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // without `sqlx-sqlite`
        if let Pool::Postgres(_) = self {
            return true;
        }
        false
    }
}

/// How long the worker waits for one of its own connections: a server that refuses them is
/// reported at `build()` within this, and a lost database is retried at this pace.
const OWN_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An open sqlx transaction on either database, from [`Pool::begin`]. Dropping it rolls back.
#[non_exhaustive]
pub enum Transaction {
    /// On PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// On SQLite.
    #[cfg(feature = "sqlx-sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Transaction {
    /// Its connection, for a signal's context or the application's own statements.
    pub fn tx(&mut self) -> Tx<'_> {
        match self {
            #[cfg(feature = "postgres")]
            Transaction::Postgres(tx) => Tx::Postgres(tx),
            #[cfg(feature = "sqlx-sqlite")]
            Transaction::Sqlite(tx) => Tx::Sqlite(tx),
        }
    }

    /// Commits: the jobs `notify_async` wrote in it become visible to workers.
    ///
    /// # Errors
    ///
    /// A database error; the transaction is then rolled back.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Transaction::Postgres(tx) => tx.commit().await,
            #[cfg(feature = "sqlx-sqlite")]
            Transaction::Sqlite(tx) => tx.commit().await,
        }
    }

    /// Rolls back: the jobs `notify_async` wrote in it are gone.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Transaction::Postgres(tx) => tx.rollback().await,
            #[cfg(feature = "sqlx-sqlite")]
            Transaction::Sqlite(tx) => tx.rollback().await,
        }
    }
}

/// A pooled connection the worker holds.
pub enum OwnedConn {
    /// On PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// On SQLite.
    #[cfg(feature = "sqlx-sqlite")]
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl OwnedConn {
    /// The connection as a [`Tx`].
    pub fn tx(&mut self) -> Tx<'_> {
        match self {
            #[cfg(feature = "postgres")]
            OwnedConn::Postgres(conn) => Tx::Postgres(conn),
            #[cfg(feature = "sqlx-sqlite")]
            OwnedConn::Sqlite(conn) => Tx::Sqlite(conn),
        }
    }
}
