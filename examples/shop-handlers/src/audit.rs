//! The audit log: one row per thing that happened, written in the same transaction.

use shop_signals::{AppCtx, OrderCreated};
use signals_core::on;

/// Runs first, so that a later failure visibly rolls this row back too.
#[on(OrderCreated, priority = 10)]
fn write_audit_log(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> rusqlite::Result<()> {
    ctx.tx.execute(
        "INSERT INTO audit_log (order_id, entry) VALUES (?1, ?2)",
        (
            sig.order_id,
            format!("order created by {}", sig.customer_email),
        ),
    )?;
    Ok(())
}
