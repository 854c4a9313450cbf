//! `with_db!`: one statement written once, run on whichever database a [`Tx`], a
//! [`Transaction`] or a [`Pool`] is on.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::marker::PhantomData;
use std::pin::Pin;

use crate::db::{Pool, Transaction, Tx};

/// Runs an expression with a name bound to the database handle inside a [`Tx`], a
/// [`Transaction`] or a [`Pool`], whichever database it is on.
///
/// `with_db!(handle, |conn| expression)`, in an `async` block or function: the expression is
/// written once and compiled once per enabled driver, so a `sqlx::query(...)` in it is typed for each (and each must have the same
/// type: end with `.map(drop)` or `.rows_affected()` rather than a driver's query result);
/// `?` and `.await` inside it belong to the enclosing function. `conn` is a
/// `&mut PgConnection` or `&mut SqliteConnection` for a transaction, a `&PgPool` or
/// `&SqlitePool` for a pool. The handle is one of:
///
/// | handle | `conn` |
/// | --- | --- |
/// | `Tx<'a>` (moved) or `&mut Tx` (reborrowed) | `&mut PgConnection` / `&mut SqliteConnection` |
/// | `&mut Transaction` | `&mut PgConnection` / `&mut SqliteConnection` |
/// | `&Pool` | `&PgPool` / `&SqlitePool` |
///
/// On the worker, a job's `Tx` is lazy: its transaction begins at the first `with_db!` (see
/// [`Tx`]), which is why the macro awaits.
///
/// # Examples
///
/// A handler's statement, on the transaction in its context, whichever database it is:
///
/// ```
/// # #[cfg(all(feature = "postgres", feature = "sqlx-sqlite"))] mod doc {
/// use signals_queue::{with_db, Tx};
///
/// pub struct AppCtx<'a> {
///     pub tx: Tx<'a>,
/// }
///
/// pub async fn record(ctx: &mut AppCtx<'_>, order_id: i64) -> Result<u64, sqlx::Error> {
///     let sql = "INSERT INTO audit (order_id) VALUES ($1)";
///     let done = with_db!(&mut ctx.tx, |conn| {
///         sqlx::query(sql).bind(order_id).execute(conn).await?.rows_affected()
///     });
///     Ok(done)
/// }
///
/// pub async fn count(pool: &signals_queue::Pool) -> Result<i64, sqlx::Error> {
///     with_db!(pool, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM audit")
///         .fetch_one(pool)
///         .await)
/// }
/// # }
/// ```
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$conn:ident| $body:expr $(,)?) => {
        match $crate::__private::Either::from_db($db).await {
            __signals_db => $crate::__with_postgres!(__signals_db, $conn, $body, {
                $crate::__with_sqlite!(__signals_db, $conn, $body, {
                    $crate::__private::Either::unreachable(__signals_db)
                })
            }),
        }
    };
}

/// Not public API. The PostgreSQL arm of [`with_db!`], present when the `postgres` feature is.
#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_postgres {
    ($db:ident, $conn:ident, $body:expr, $else:block) => {
        match $db {
            $crate::__private::Either::Postgres($conn) => $body,
            $db => $else,
        }
    };
}

/// Not public API. See [`__with_postgres!`].
#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_postgres {
    ($db:ident, $conn:ident, $body:expr, $else:block) => {
        $else
    };
}

/// Not public API. The SQLite arm of [`with_db!`], present when the `sqlx-sqlite` feature is.
#[cfg(feature = "sqlx-sqlite")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_sqlite {
    ($db:ident, $conn:ident, $body:expr, $else:block) => {
        match $db {
            $crate::__private::Either::Sqlite($conn) => $body,
            $db => $else,
        }
    };
}

/// Not public API. See [`__with_sqlite!`].
#[cfg(not(feature = "sqlx-sqlite"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_sqlite {
    ($db:ident, $conn:ident, $body:expr, $else:block) => {
        $else
    };
}

/// Not public API. A database handle split by driver, for [`with_db!`]; unlike [`Tx`] and
/// [`Pool`], it is not `#[non_exhaustive]` and takes the handle types as parameters.
#[doc(hidden)]
pub enum Either<P, S> {
    #[cfg(feature = "postgres")]
    Postgres(P),
    #[cfg(feature = "sqlx-sqlite")]
    Sqlite(S),
    #[doc(hidden)]
    __Never(Infallible, PhantomData<(P, S)>),
}

impl<P, S> Either<P, S> {
    /// Not public API: the handle split by driver, once a job's lazy transaction is open.
    pub fn from_db<D: IntoEither<Pg = P, Lite = S>>(db: D) -> D::Future {
        db.into_either()
    }

    /// Not public API: what is left once every enabled driver's arm was tried.
    pub fn unreachable(self) -> ! {
        match self {
            #[cfg(feature = "postgres")]
            Either::Postgres(_) => unreachable!("the PostgreSQL arm took it"),
            #[cfg(feature = "sqlx-sqlite")]
            Either::Sqlite(_) => unreachable!("the SQLite arm took it"),
            Either::__Never(never, _) => match never {},
        }
    }
}

/// Not public API. What [`with_db!`] accepts.
#[doc(hidden)]
pub trait IntoEither {
    type Pg;
    type Lite;
    type Future: Future<Output = Either<Self::Pg, Self::Lite>>;
    fn into_either(self) -> Self::Future;
}

#[cfg(feature = "postgres")]
type PgConn = sqlx::PgConnection;
#[cfg(not(feature = "postgres"))]
type PgConn = Infallible;
#[cfg(feature = "sqlx-sqlite")]
type SqliteConn = sqlx::SqliteConnection;
#[cfg(not(feature = "sqlx-sqlite"))]
type SqliteConn = Infallible;
#[cfg(feature = "postgres")]
type PgPool = sqlx::PgPool;
#[cfg(not(feature = "postgres"))]
type PgPool = Infallible;
#[cfg(feature = "sqlx-sqlite")]
type SqlitePool = sqlx::SqlitePool;
#[cfg(not(feature = "sqlx-sqlite"))]
type SqlitePool = Infallible;

type Conns<'a> = Either<&'a mut PgConn, &'a mut SqliteConn>;

/// An open connection, split by driver.
fn split(tx: Tx<'_>) -> Conns<'_> {
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(conn) => Either::Postgres(conn),
        #[cfg(feature = "sqlx-sqlite")]
        Tx::Sqlite(conn) => Either::Sqlite(conn),
        Tx::__Job(_) => unreachable!("a job's transaction is opened before it is split"),
    }
}

impl<'a> IntoEither for Tx<'a> {
    type Pg = &'a mut PgConn;
    type Lite = &'a mut SqliteConn;
    type Future = Pin<Box<dyn Future<Output = Conns<'a>> + Send + 'a>>;

    fn into_either(self) -> Self::Future {
        Box::pin(async move { split(self.__opened().await) })
    }
}

impl<'a> IntoEither for &'a mut Tx<'_> {
    type Pg = &'a mut PgConn;
    type Lite = &'a mut SqliteConn;
    type Future = Pin<Box<dyn Future<Output = Conns<'a>> + Send + 'a>>;

    fn into_either(self) -> Self::Future {
        self.reborrow().into_either()
    }
}

impl<'a> IntoEither for &'a mut Transaction {
    type Pg = &'a mut PgConn;
    type Lite = &'a mut SqliteConn;
    type Future = Ready<Conns<'a>>;

    fn into_either(self) -> Self::Future {
        std::future::ready(split(self.tx()))
    }
}

impl<'a> IntoEither for &'a Pool {
    type Pg = &'a PgPool;
    type Lite = &'a SqlitePool;
    type Future = Ready<Either<Self::Pg, Self::Lite>>;

    fn into_either(self) -> Self::Future {
        std::future::ready(match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => Either::Postgres(pool),
            #[cfg(feature = "sqlx-sqlite")]
            Pool::Sqlite(pool) => Either::Sqlite(pool),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Pool, Tx};

    // Compiled with each driver feature alone too (`.ci/run` lints every combination), so that
    // the arms the macro leaves out are known to leave valid code.

    async fn one(pool: &Pool) -> Result<i64, sqlx::Error> {
        with_db!(pool, |pool| sqlx::query_scalar("SELECT 1")
            .fetch_one(pool)
            .await)
    }

    async fn rows(tx: &mut Tx<'_>, sql: &'static str) -> Result<u64, sqlx::Error> {
        Ok(with_db!(tx, |conn| sqlx::query(sql)
            .execute(conn)
            .await?
            .rows_affected()))
    }

    #[cfg(feature = "sqlx-sqlite")]
    #[tokio::test]
    async fn one_statement_runs_on_a_pool_a_transaction_and_a_tx() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("with_db.db").display());
        let pool = Pool::connect(&url, 1).await.unwrap();
        assert_eq!(one(&pool).await.unwrap(), 1);
        let mut tx = pool.begin().await.unwrap();
        with_db!(&mut tx, |conn| sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
            .execute(conn)
            .await
            .map(drop))
        .unwrap();
        let mut conn = tx.tx();
        let inserted = rows(&mut conn, "INSERT INTO t (x) VALUES (1), (2)").await;
        assert_eq!(inserted.unwrap(), 2);
        tx.commit().await.unwrap();
        let count = with_db!(&pool, |pool| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM t"
        )
        .fetch_one(pool)
        .await)
        .unwrap();
        assert_eq!(count, 2);
    }

    #[cfg(not(feature = "sqlx-sqlite"))]
    #[allow(dead_code)]
    async fn compiled_only(pool: &Pool, tx: &mut Tx<'_>) {
        let _ = (one(pool).await, rows(tx, "SELECT 1").await);
    }
}
