//! Customer email: queued, so that it is sent after the order commits, and retried.

use shop_signals::{AppCtx, OrderCreated};
use signals_core::{on, BoxError};

/// `queue`: inside `notify` this writes a job in the order's transaction (a declined order
/// rolls it back with everything else); the worker calls this function after commit, and again
/// after a backoff when the mail provider fails, up to 5 times. The body is what it would be as
/// an in-transaction handler.
///
/// It calls the provider before it writes: on SQLite the worker's transaction takes the write
/// lock at the first write, so the provider's delay does not hold up the shop's other writers.
/// The `emails` row commits with the job's completion: one per order, however many attempts.
#[on(OrderCreated, priority = -10, queue = "email", max_attempts = 5)]
fn send_welcome_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    let subject = format!("Thanks for your order #{}", sig.order_id);
    ctx.mailer.send(&sig.customer_email, &subject)?;
    ctx.tx.execute(
        "INSERT INTO emails (order_id, recipient, subject) VALUES (?1, ?2, ?3)",
        (sig.order_id, &sig.customer_email, &subject),
    )?;
    Ok(())
}
