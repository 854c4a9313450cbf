//! What the async queue's tests share: a database per test, on PostgreSQL (a schema of its own,
//! dropped at the end) and on SQLite (a file), and a patient wait.

#![allow(dead_code)] // each test binary uses its part

use std::time::{Duration, Instant};

use signals_core::BoxError;
use signals_queue::{with_db, AsyncJobScope, AsyncQueue, EnqueueAsync, FromJobAsync, Pool, Tx};

/// The context of the tests' asynchronous signals: the transaction, in `notify_async` the
/// caller's, on the worker the job's.
pub struct Ctx<'a> {
    pub tx: Tx<'a>,
}

impl EnqueueAsync for Ctx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for Ctx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        Ok(Ctx {
            tx: job.transaction(),
        })
    }
}

/// The tests' own tables.
const APP_SCHEMA: [&str; 4] = [
    "CREATE TABLE orders (id BIGINT PRIMARY KEY)",
    "CREATE TABLE emails (order_id BIGINT NOT NULL)",
    "CREATE TABLE effects (n BIGINT NOT NULL)",
    "CREATE TABLE shipments (order_id BIGINT NOT NULL)",
];

/// One test's database: a schema of its own on PostgreSQL, or a SQLite file.
pub struct Db {
    /// The URL a child process connects with.
    pub url: String,
    /// `Some(schema)` on PostgreSQL.
    pub schema: Option<String>,
    pub pool: Pool,
    _dir: Option<tempfile::TempDir>,
}

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn postgres_url() -> String {
    std::env::var("SIGNALS_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.to_owned())
}

impl Db {
    /// Both databases, or SQLite alone (with a message) when PostgreSQL is unreachable
    /// outside CI.
    pub async fn all() -> Vec<Db> {
        let mut dbs = vec![Db::sqlite().await];
        match Db::postgres().await {
            Ok(db) => dbs.insert(0, db),
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL at {} is required under CI: {error}", postgres_url())
            }
            Err(error) => eprintln!(
                "skipping the PostgreSQL half: {} is unreachable ({error}); set SIGNALS_TEST_POSTGRES_URL",
                postgres_url()
            ),
        }
        dbs
    }

    pub async fn postgres() -> Result<Db, sqlx::Error> {
        let db = Db::postgres_bare().await?;
        db.create_app_tables().await;
        Ok(db)
    }

    /// A schema of its own with nothing in it: not migrated.
    pub async fn postgres_bare() -> Result<Db, sqlx::Error> {
        let url = postgres_url();
        let schema = format!("signals_test_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = format!("{url}?options=-c%20search_path%3D{schema}&application_name={schema}");
        let db = Db {
            pool: Db::connect(&url).await,
            url,
            schema: Some(schema),
            _dir: None,
        };
        Ok(db)
    }

    /// PostgreSQL, or `None` (with a message) when it is unreachable outside CI.
    pub async fn postgres_or_skip(bare: bool) -> Option<Db> {
        let db = match bare {
            true => Db::postgres_bare().await,
            false => Db::postgres().await,
        };
        match db {
            Ok(db) => Some(db),
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!(
                    "PostgreSQL at {} is required under CI: {error}",
                    postgres_url()
                )
            }
            Err(error) => {
                eprintln!(
                    "skipping: PostgreSQL at {} is unreachable ({error})",
                    postgres_url()
                );
                None
            }
        }
    }

    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        let db = Db {
            pool: Db::connect(&url).await,
            url,
            schema: None,
            _dir: Some(dir),
        };
        db.create_app_tables().await;
        db
    }

    pub async fn connect(url: &str) -> Pool {
        Pool::connect(url, 8).await.unwrap()
    }

    pub fn name(&self) -> &'static str {
        if self.schema.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    pub async fn create_app_tables(&self) {
        AsyncQueue::new(self.pool.clone()).migrate().await.unwrap();
        for sql in APP_SCHEMA {
            self.execute(sql).await;
        }
    }

    pub async fn execute(&self, sql: &'static str) -> u64 {
        let mut conn = self.pool.begin().await.unwrap();
        let changed = with_db!(&mut conn, |c| sqlx::query(sql)
            .execute(c)
            .await
            .unwrap()
            .rows_affected());
        conn.commit().await.unwrap();
        changed
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        with_db!(&self.pool, |pool| sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap())
    }

    pub async fn drop_schema(mut self) {
        if let Some(schema) = self.schema.take() {
            self.execute_owned(format!("DROP SCHEMA {schema} CASCADE"))
                .await;
        }
    }

    pub async fn execute_owned(&self, sql: String) {
        if let Pool::Postgres(pool) = &self.pool {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

/// A test that failed before `drop_schema` still drops its schema: on a thread of its own, since
/// the test's runtime cannot block here.
impl Drop for Db {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&postgres_url()).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
    }
}

/// Waits for `condition`, checking every 10 ms, for at most 30 s.
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy in front of PostgreSQL that can be cut: [`cut`](Self::cut) closes every
/// connection through it and refuses new ones, as a network partition or a database outage
/// would look to a process.
pub struct CutProxy {
    /// The server's `host:port`, and the proxy's.
    upstream: String,
    addr: String,
    cut: tokio::sync::watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// A proxy in front of the server of `postgres_url()`.
    pub async fn start() -> CutProxy {
        let url = postgres_url();
        let upstream = url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("a postgres://user@host:port/db URL")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (cut, _) = tokio::sync::watch::channel(false);
        let (to, cuts) = (upstream.clone(), cut.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = tokio::net::TcpStream::connect(&to).await else {
                    continue;
                };
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CutProxy {
            upstream,
            addr,
            cut,
            accepting,
        }
    }

    /// `url` (of the server) through the proxy.
    pub fn url(&self, url: &str) -> String {
        url.replacen(&self.upstream, &self.addr, 1)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.accepting.abort();
        self.cut.send_replace(true);
    }
}
