//! What happens in the shop (the signals) and what every handler receives (the context).
//!
//! This crate knows nothing about billing, audit logs or email: handlers live in
//! `shop-handlers`, and the binary that places orders in `order_flow.rs`.

use rusqlite::Transaction;
use signals_core::Signal;

/// What every handler of a shop signal receives: the caller's open transaction and a mailer.
///
/// Handlers write through `tx`, so their rows commit or roll back with the order itself.
pub struct AppCtx<'a> {
    /// The transaction the order is being placed in.
    pub tx: &'a Transaction<'a>,
    /// Queues email in the transaction's outbox; a relay sends it after commit.
    pub mailer: &'a Mailer,
}

/// Queues email in the `outbox` table, inside the caller's transaction.
///
/// Email is never sent from inside the transaction: if the order rolls back, so does the
/// email. A relay sends what the outbox holds once the transaction has committed.
pub struct Mailer {
    /// The sender address.
    pub from: &'static str,
}

impl Mailer {
    /// Queues one email in `tx`'s outbox.
    pub fn queue(&self, tx: &Transaction<'_>, to: &str, subject: &str) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO outbox (sender, recipient, subject) VALUES (?1, ?2, ?3)",
            (self.from, to, subject),
        )?;
        Ok(())
    }
}

/// An order was inserted; its handlers run inside the same transaction.
#[derive(Signal, Debug)]
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
