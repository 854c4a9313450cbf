//! Billing: charge the card and record the charge, or fail and roll the whole order back.

use shop_signals::{AppCtx, OrderCreated};
use signals_core::on;

/// Why billing refused an order.
#[derive(Debug)]
pub enum BillingError {
    /// The card issuer declined the charge.
    CardDeclined {
        /// The card's last four digits.
        last4: String,
    },
    /// The billing record could not be written.
    Database(rusqlite::Error),
}

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BillingError::CardDeclined { last4 } => {
                write!(f, "card ending in {last4} was declined")
            }
            BillingError::Database(_) => f.write_str("could not write the billing record"),
        }
    }
}

impl std::error::Error for BillingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BillingError::CardDeclined { .. } => None,
            BillingError::Database(error) => Some(error),
        }
    }
}

impl From<rusqlite::Error> for BillingError {
    fn from(error: rusqlite::Error) -> Self {
        BillingError::Database(error)
    }
}

/// The test card number that every issuer declines.
const DECLINED_CARD: &str = "4000 0000 0000 0002";

#[on(OrderCreated)]
fn create_billing_record(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), BillingError> {
    if sig.card_number == DECLINED_CARD {
        let last4 = sig.card_number[sig.card_number.len() - 4..].to_owned();
        return Err(BillingError::CardDeclined { last4 });
    }
    ctx.tx.execute(
        "INSERT INTO billing (order_id, amount_cents) VALUES (?1, ?2)",
        (sig.order_id, sig.total_cents),
    )?;
    Ok(())
}
