//! The shop of `order_flow`, on the queue rung's async path: the same signal, the same three
//! handlers (billing and the audit log in the order's transaction, the welcome email queued),
//! written as `async fn`s over sqlx so that one program runs on SQLite or PostgreSQL.
//!
//! `shop.rs` is the command line over it; `tests/shop.rs` kills and races its workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{with_db, AsyncJobScope, AsyncQueue, EnqueueAsync, FromJobAsync, Pool, Tx};

/// What every handler of a shop signal receives: a transaction and the mail provider.
///
/// In `notify_async`, `tx` is the caller's transaction: handlers' rows commit or roll back with
/// the order, and so do the jobs of queued handlers. On the worker, `tx` is the worker's
/// transaction for one job.
pub struct AppCtx<'a> {
    /// The transaction the handler writes in.
    pub tx: Tx<'a>,
    /// Sends email; a queued handler calls it after the order committed.
    pub mailer: &'a Mailer,
}

impl EnqueueAsync for AppCtx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for AppCtx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        let mailer: &'c Arc<Mailer> = job.state()?;
        Ok(AppCtx {
            tx: job.transaction(),
            mailer,
        })
    }
}

/// An order was inserted; its handlers run inside the same transaction, or are queued in it.
#[derive(Signal, Debug, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous)]
pub struct OrderCreated {
    /// The new order's id.
    pub order_id: i64,
    /// Who placed it.
    pub customer_email: String,
    /// What the card is charged, in cents.
    pub total_cents: i64,
    /// The card to charge.
    pub card_number: String,
}

/// A card that billing accepts.
pub const GOOD_CARD: &str = "4242 4242 4242 4242";
/// The test card that every issuer declines.
pub const DECLINED_CARD: &str = "4000 0000 0000 0002";

/// Runs first, so that a later failure visibly rolls this row back too.
#[on(OrderCreated, priority = 10)]
async fn write_audit_log(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), sqlx::Error> {
    let entry = format!("order created by {}", sig.customer_email);
    let sql = "INSERT INTO audit_log (order_id, entry) VALUES ($1, $2)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.order_id)
        .bind(&entry)
        .execute(conn)
        .await
        .map(drop))
}

/// Billing declined the order: the whole transaction rolls back.
#[derive(Debug)]
pub struct CardDeclined {
    /// The card's last four digits.
    pub last4: String,
}

impl std::fmt::Display for CardDeclined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "card ending in {} was declined", self.last4)
    }
}

impl std::error::Error for CardDeclined {}

#[on(OrderCreated)]
async fn create_billing_record(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    if sig.card_number == DECLINED_CARD {
        let last4 = sig.card_number[sig.card_number.len() - 4..].to_owned();
        return Err(CardDeclined { last4 }.into());
    }
    let sql = "INSERT INTO billing (order_id, amount_cents) VALUES ($1, $2)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.order_id)
        .bind(sig.total_cents)
        .execute(conn)
        .await
        .map(drop))?;
    Ok(())
}

/// Queued: inside `notify_async` this writes a job in the order's transaction; the worker calls
/// it after commit, and again after a backoff when the provider fails, up to 5 times. The
/// `emails` row commits with the job's completion: one per order, however many attempts.
#[on(OrderCreated, priority = -10, queue = "email", max_attempts = 5)]
async fn send_welcome_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    if ctx.mailer.crash_on_order == Some(sig.order_id) {
        // `shop worker --crash-on-order ID`: a job that takes its process down, every time.
        std::process::abort();
    }
    let subject = format!("Thanks for your order #{}", sig.order_id);
    ctx.mailer.send(&sig.customer_email, &subject).await?;
    let sql = "INSERT INTO emails (order_id, recipient, subject) VALUES ($1, $2, $3)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.order_id)
        .bind(&sig.customer_email)
        .bind(&subject)
        .execute(conn)
        .await
        .map(drop))?;
    Ok(())
}

/// Delayed: written with the order like the welcome email, but due three days after the
/// statement that wrote it (`delay = "3d"`). Until then no claim reads it and a worker is idle
/// without it (`shop worker --until-idle` does not wait three days); then it runs like any job.
#[on(OrderCreated, queue = "email", delay = "3d")]
async fn send_follow_up_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    let subject = format!("How is order #{} working out?", sig.order_id);
    ctx.mailer.send(&sig.customer_email, &subject).await?;
    let sql = "INSERT INTO follow_ups (order_id) VALUES ($1)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.order_id)
        .execute(conn)
        .await
        .map(drop))?;
    Ok(())
}

/// Fired every second by the fleet's leader (one worker of all that run), once per tick: a
/// periodic signal is an ordinary signal whose `notify` the queue makes on a schedule. The
/// tick's time fills the field marked `#[signal(tick)]`.
#[derive(Signal, Debug, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous, every = "1s")]
pub struct Heartbeat {
    /// When the tick fell: a whole second (ticks count from the Unix epoch).
    #[signal(tick)]
    pub at: SystemTime,
}

/// Runs in the tick's transaction, which also recorded the tick: one row per tick, whichever
/// worker leads and however many race.
#[on(Heartbeat)]
async fn record_heartbeat(sig: &Heartbeat, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    let millis = sig.at.duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let sql = "INSERT INTO ticks (tick_ms) VALUES ($1)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(millis)
        .execute(conn)
        .await
        .map(drop))?;
    Ok(())
}

/// Every night at 03:00 UTC: the day's report. Its handler is queued, so the tick only writes
/// a job, and any worker runs it with retries like any job.
#[derive(Signal, Debug, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>, asynchronous, cron = "0 3 * * *")]
pub struct NightlyReport {
    /// The night's tick: 03:00 UTC of the day the report is written.
    #[signal(tick)]
    pub at: SystemTime,
}

/// Writes the report: the orders placed so far, as of the tick.
#[on(NightlyReport, queue = "reports")]
async fn write_nightly_report(sig: &NightlyReport, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    let millis = sig.at.duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let sql = "INSERT INTO reports (tick_ms, orders) SELECT $1, COUNT(*) FROM orders";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(millis)
        .execute(conn)
        .await
        .map(drop))?;
    Ok(())
}

/// The thin message other services get for a committed order: what they need to find it, not
/// the order itself (they read the rest from the source of truth). The subject is a delivery
/// concern: it is here, on the projection, and never on the domain event.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderCreatedMessage {
    /// The new order's id.
    pub order_id: i64,
}

/// Inside `notify_async` this runs and its message is written as a job in the order's
/// transaction; a relay publishes it to JetStream after commit (`shop worker --nats URL`).
#[on(OrderCreated, publish = "shop.orders.created")]
fn order_created_message(sig: &OrderCreated) -> OrderCreatedMessage {
    OrderCreatedMessage {
        order_id: sig.order_id,
    }
}

/// A simulated mail provider: each call waits, fails with some probability, and is counted in
/// the `email_attempts` table outside any transaction (what the provider saw).
pub struct Mailer {
    fail_rate: f64,
    delay: Duration,
    /// Where each call is counted, if anywhere.
    attempts_log: Option<Pool>,
    attempts: AtomicUsize,
    /// The order whose welcome email aborts the process (a test hook for crash handling).
    crash_on_order: Option<i64>,
}

/// The mail provider did not take the email.
#[derive(Debug)]
pub struct MailError(String);

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MailError {}

impl Mailer {
    /// A provider that waits `delay` per call, fails with probability `fail_rate`, and counts
    /// each call in `attempts_log`'s `email_attempts` table.
    pub fn simulated(fail_rate: f64, delay: Duration, attempts_log: Option<Pool>) -> Mailer {
        Mailer {
            fail_rate,
            delay,
            attempts_log,
            attempts: AtomicUsize::new(0),
            crash_on_order: None,
        }
    }

    /// Makes the welcome email of order `order_id` abort the process, before the provider is
    /// called: a job that crashes its worker every time it runs.
    pub fn crash_on_order(mut self, order_id: Option<i64>) -> Mailer {
        self.crash_on_order = order_id;
        self
    }

    /// Sends one email.
    ///
    /// # Errors
    ///
    /// [`MailError`] when the provider fails the call (or it could not be counted).
    pub async fn send(&self, to: &str, _subject: &str) -> Result<(), MailError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(pool) = &self.attempts_log {
            let sql = "INSERT INTO email_attempts (recipient) VALUES ($1)";
            let counted = with_db!(pool, |pool| sqlx::query(sql)
                .bind(to)
                .execute(pool)
                .await
                .map(drop));
            counted.map_err(|error| MailError(error.to_string()))?;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if fastrand::f64() < self.fail_rate {
            return Err(MailError(format!("timed out sending to {to}")));
        }
        Ok(())
    }

    /// How many times `send` was called in this process.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

/// The shop's tables on PostgreSQL. The jobs table is the queue's (`AsyncQueue::migrate`).
const POSTGRES_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS orders (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_email TEXT NOT NULL, total_cents BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS billing (order_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS audit_log (order_id BIGINT NOT NULL, entry TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS emails (order_id BIGINT NOT NULL UNIQUE, recipient TEXT NOT NULL, subject TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS email_attempts (recipient TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS follow_ups (order_id BIGINT NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS ticks (tick_ms BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS reports (tick_ms BIGINT NOT NULL, orders BIGINT NOT NULL);
";

/// The same tables on SQLite.
const SQLITE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer_email TEXT NOT NULL, total_cents INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS billing (order_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS audit_log (order_id INTEGER NOT NULL, entry TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS emails (order_id INTEGER NOT NULL UNIQUE, recipient TEXT NOT NULL, subject TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS email_attempts (recipient TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS follow_ups (order_id INTEGER NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS ticks (tick_ms INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS reports (tick_ms INTEGER NOT NULL, orders INTEGER NOT NULL);
";

/// Creates the queue's table and the shop's.
///
/// # Errors
///
/// A database error.
pub async fn migrate(pool: &Pool) -> Result<(), BoxError> {
    AsyncQueue::new(pool.clone()).migrate().await?;
    let schema = match pool.is_postgres() {
        true => POSTGRES_SCHEMA,
        false => SQLITE_SCHEMA,
    };
    with_db!(pool, |pool| sqlx::raw_sql(schema)
        .execute(pool)
        .await
        .map(drop))?;
    Ok(())
}

/// Why an order could not be placed.
#[derive(Debug)]
pub enum PlaceOrderError {
    /// The order itself could not be written or committed.
    Database(sqlx::Error),
    /// A handler of `OrderCreated` failed; nothing was committed.
    Handler(signals_core::Error),
}

impl std::fmt::Display for PlaceOrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaceOrderError::Database(error) => write!(f, "database error: {error}"),
            PlaceOrderError::Handler(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for PlaceOrderError {}

impl From<sqlx::Error> for PlaceOrderError {
    fn from(error: sqlx::Error) -> Self {
        PlaceOrderError::Database(error)
    }
}

/// Inserts the order and notifies `OrderCreated`, all in one transaction (`IMMEDIATE` on
/// SQLite). If a handler fails, dropping the transaction rolls back the order, every row the
/// handlers wrote, and the queued email's job.
///
/// # Errors
///
/// [`PlaceOrderError`]: a handler's failure (nothing committed) or a database error.
pub async fn place_order(
    pool: &Pool,
    mailer: &Mailer,
    customer_email: &str,
    total_cents: i64,
    card_number: &str,
) -> Result<i64, PlaceOrderError> {
    let mut tx = pool.begin().await?;
    let sql = "INSERT INTO orders (customer_email, total_cents) VALUES ($1, $2) RETURNING id";
    let order_id: i64 = with_db!(&mut tx, |conn| sqlx::query_scalar(sql)
        .bind(customer_email)
        .bind(total_cents)
        .fetch_one(conn)
        .await)?;
    let signal = OrderCreated {
        order_id,
        customer_email: customer_email.to_owned(),
        total_cents,
        card_number: card_number.to_owned(),
    };
    notify_async(
        &signal,
        &mut AppCtx {
            tx: tx.tx(),
            mailer,
        },
    )
    .await
    .map_err(PlaceOrderError::Handler)?;
    tx.commit().await?;
    Ok(order_id)
}

/// The counts `shop stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopStats {
    /// Committed orders.
    pub orders: i64,
    /// Emails recorded by the queued handler (one per order once the queue drains).
    pub emails: i64,
    /// Calls the mail provider saw, successful or not.
    pub email_attempts: i64,
    /// Jobs waiting, now or after a retry's backoff.
    pub pending: u64,
    /// Jobs claimed by a worker.
    pub running: u64,
    /// Jobs out of attempts.
    pub dead: u64,
    /// Messages waiting in the outbox for a relay (not counted in `pending`).
    pub publish_pending: u64,
    /// Messages the relay published (JetStream acknowledged them).
    pub published: u64,
    /// Rows the `Heartbeat` handler wrote: one per tick fired.
    pub tick_rows: i64,
    /// Distinct tick times among them: equal to `tick_rows` when no tick fired twice.
    pub distinct_ticks: i64,
}

impl std::fmt::Display for ShopStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            r#"{{"orders": {}, "emails": {}, "email_attempts": {}, "jobs": {{"pending": {}, "running": {}, "dead": {}}}, "publish_pending": {}, "published": {}, "ticks": {{"rows": {}, "distinct": {}}}}}"#,
            self.orders,
            self.emails,
            self.email_attempts,
            self.pending,
            self.running,
            self.dead,
            self.publish_pending,
            self.published,
            self.tick_rows,
            self.distinct_ticks
        )
    }
}

/// Reads the shop's counts and the queue's.
///
/// # Errors
///
/// A database error.
pub async fn stats(pool: &Pool) -> Result<ShopStats, BoxError> {
    let mut counts = [0i64; 5];
    for (count, sql) in counts.iter_mut().zip([
        "SELECT COUNT(*) FROM orders",
        "SELECT COUNT(*) FROM emails",
        "SELECT COUNT(*) FROM email_attempts",
        "SELECT COUNT(*) FROM ticks",
        "SELECT COUNT(DISTINCT tick_ms) FROM ticks",
    ]) {
        *count = with_db!(pool, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?);
    }
    let jobs = AsyncQueue::new(pool.clone()).stats().await?;
    let publishing: Vec<&str> = signals_queue::jobs()
        .filter(|job| job.is_publish())
        .map(|job| job.name())
        .collect();
    let mut stats = ShopStats {
        orders: counts[0],
        emails: counts[1],
        email_attempts: counts[2],
        pending: 0,
        running: 0,
        dead: 0,
        publish_pending: 0,
        published: 0,
        tick_rows: counts[3],
        distinct_ticks: counts[4],
    };
    for (handler, counts) in &jobs.handlers {
        if publishing.contains(&handler.as_str()) {
            stats.publish_pending += counts.pending + counts.running;
            stats.published += counts.done;
        } else if handler.ends_with("::send_welcome_email") {
            // The jobs counts concern the welcome email only, whatever other handlers run.
            stats.pending += counts.pending;
            stats.running += counts.running;
            stats.dead += counts.dead;
        }
    }
    Ok(stats)
}

/// Ctrl-C, or SIGTERM on Unix: what the shop's long-running commands stop on.
///
/// # Panics
///
/// If a SIGTERM handler cannot be installed.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
