//! What happens in the shop (the signals) and what every handler receives (the context).
//!
//! This crate knows nothing about billing, audit logs or email: handlers live in
//! `shop-handlers`, and the binary that places orders in `order_flow.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};
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

/// A mail provider that is down for the first attempt of every send, as providers are now and
/// then; it prints what it does, and remembers what it delivered.
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
    /// A provider sending from `from`.
    pub fn new(from: &'static str) -> Mailer {
        Mailer {
            from,
            attempts: AtomicUsize::new(0),
            delivered: Mutex::new(Vec::new()),
        }
    }

    /// Sends one email; every odd-numbered call times out.
    ///
    /// # Errors
    ///
    /// [`MailError`] when the provider times out.
    pub fn send(&self, to: &str, subject: &str) -> Result<(), MailError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt % 2 == 1 {
            println!("  mail provider: timed out sending to {to} (call {attempt})");
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

    /// How many times `send` was called.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Every email delivered, as `recipient: subject`.
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
