//! Customer email, queued in the transactional outbox.

use shop_signals::{AppCtx, OrderCreated};
use signals_core::on;

/// Runs last: only an order that billing accepted gets a welcome email.
#[on(OrderCreated, priority = -10)]
fn send_welcome_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> rusqlite::Result<()> {
    let subject = format!("Thanks for your order #{}", sig.order_id);
    ctx.mailer.queue(ctx.tx, &sig.customer_email, &subject)
}
