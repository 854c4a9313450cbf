//! Customer email: queued, so that it is sent after the order commits, and retried.

use shop_signals::{AppCtx, MailError, OrderCreated};
use signals_core::on;

/// `queue`: inside `notify` this writes a job in the order's transaction (a declined order
/// rolls it back with everything else); the worker calls this function after commit, and again
/// after a backoff when the mail provider fails, up to 5 times. The body is what it would be as
/// an in-transaction handler.
#[on(OrderCreated, priority = -10, queue = "email", max_attempts = 5)]
fn send_welcome_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), MailError> {
    let subject = format!("Thanks for your order #{}", sig.order_id);
    ctx.mailer.send(&sig.customer_email, &subject)
}
