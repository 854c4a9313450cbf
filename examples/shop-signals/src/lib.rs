//! What happens in the shop (the signals), what every handler receives (the context), and the
//! shop's own code: its tables and how it places an order.
//!
//! This crate knows nothing about billing, audit logs or email: handlers live in
//! `shop-handlers`, and the binary that places orders is `order_flow.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use signals_core::{BoxError, Signal};
use signals_queue::{Enqueue, FromJob, JobScope};

/// What every handler of a shop signal receives: a transaction and the mail provider.
///
/// In `notify`, `tx` is the caller's transaction: handlers' rows commit or roll back with the
/// order itself, and so do the jobs of queued handlers. On the worker, `tx` is the worker's
/// transaction for one job.
pub struct AppCtx<'a> {
    /// The transaction the handler writes in.
    pub tx: &'a Transaction<'a>,
    /// Sends email. Never call it inside the order's transaction: a rolled-back order would
    /// still have sent its email. A queued handler calls it after commit.
    pub mailer: &'a Mailer,
}

/// `notify` writes the jobs of queued handlers in the context's transaction.
impl Enqueue for AppCtx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

/// The worker builds the same context from its own transaction and the mailer it was given.
impl<'c> FromJob<'c> for AppCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        let mailer: &'c Arc<Mailer> = job.state()?;
        Ok(AppCtx {
            tx: job.transaction(),
            mailer,
        })
    }
}

/// A simulated mail provider whose odd-numbered calls time out (a first attempt fails, its retry
/// succeeds), and that remembers what it delivered.
pub struct Mailer {
    /// The sender address.
    pub from: &'static str,
    attempts: AtomicUsize,
    delivered: Mutex<Vec<String>>,
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
    /// A provider whose odd-numbered calls time out, and that prints what it does.
    pub fn flaky(from: &'static str) -> Mailer {
        Mailer {
            from,
            attempts: AtomicUsize::new(0),
            delivered: Mutex::new(Vec::new()),
        }
    }

    /// Sends one email.
    ///
    /// # Errors
    ///
    /// [`MailError`] when the provider times out.
    pub fn send(&self, to: &str, subject: &str) -> Result<(), MailError> {
        let call = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if call % 2 == 1 {
            println!("  mail provider: timed out sending to {to} (call {call})");
            return Err(MailError(format!("timed out sending to {to}")));
        }
        println!(
            "  mail provider: sent \"{subject}\" from {} to {to}",
            self.from
        );
        let mut delivered = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
        delivered.push(format!("{to}: {subject}"));
        Ok(())
    }

    /// How many times `send` was called in this process.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Every email delivered in this process, as `recipient: subject`.
    pub fn delivered(&self) -> Vec<String> {
        self.delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// An order was inserted; its handlers run inside the same transaction, or are queued in it.
#[derive(Signal, Debug, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>)]
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

/// An order left the warehouse. Nothing reacts to it yet; the catalog says so.
#[derive(Signal, Debug)]
#[signal(context = AppCtx<'_>)]
pub struct OrderShipped {
    /// The order that shipped.
    pub order_id: i64,
}

/// A card that billing accepts.
pub const GOOD_CARD: &str = "4242 4242 4242 4242";
/// The test card that every issuer declines.
pub const DECLINED_CARD: &str = "4000 0000 0000 0002";

/// The shop's tables. The jobs table is the queue's (`signals_queue::migrate`).
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer_email TEXT NOT NULL, total_cents INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS billing (order_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS audit_log (order_id INTEGER NOT NULL, entry TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS emails (order_id INTEGER NOT NULL UNIQUE, recipient TEXT NOT NULL, subject TEXT NOT NULL);
";

/// Creates the shop's tables and the queue's in the database at `path`.
///
/// # Errors
///
/// A database error.
pub fn migrate(path: &Path) -> Result<Connection, signals_queue::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    signals_queue::migrate(&conn)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Why an order could not be placed.
#[derive(Debug)]
pub enum PlaceOrderError {
    /// The order itself could not be written or committed.
    Database(rusqlite::Error),
    /// A handler of `OrderCreated` failed; nothing was committed.
    Handler(signals_core::Error),
}

impl From<rusqlite::Error> for PlaceOrderError {
    fn from(error: rusqlite::Error) -> Self {
        PlaceOrderError::Database(error)
    }
}

impl From<signals_core::Error> for PlaceOrderError {
    fn from(error: signals_core::Error) -> Self {
        PlaceOrderError::Handler(error)
    }
}

impl std::fmt::Display for PlaceOrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaceOrderError::Database(error) => write!(f, "database error: {error}"),
            PlaceOrderError::Handler(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for PlaceOrderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlaceOrderError::Database(error) => Some(error),
            PlaceOrderError::Handler(error) => Some(error),
        }
    }
}

/// Inserts the order and notifies `OrderCreated`, all in one transaction.
///
/// If any handler fails, `?` returns before `commit`: dropping `tx` rolls back the order, every
/// row the handlers wrote, and the jobs of queued handlers. The transaction begins `IMMEDIATE`:
/// SQLite has one writer, and a worker writes too.
///
/// # Errors
///
/// [`PlaceOrderError`]: a handler's failure (nothing committed) or a database error.
pub fn place_order(
    conn: &mut Connection,
    mailer: &Mailer,
    customer_email: &str,
    total_cents: i64,
    card_number: &str,
) -> Result<i64, PlaceOrderError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO orders (customer_email, total_cents) VALUES (?1, ?2)",
        (customer_email, total_cents),
    )?;
    let order_id = tx.last_insert_rowid();

    let signal = OrderCreated {
        order_id,
        customer_email: customer_email.to_owned(),
        total_cents,
        card_number: card_number.to_owned(),
    };
    signals_core::notify(&signal, &mut AppCtx { tx: &tx, mailer })?;

    tx.commit()?;
    Ok(order_id)
}
