//! Shipping's handlers.

use crate::{billing, OrderPlaced, OrderShipped, RunLog};

#[signals_core::on(OrderPlaced, priority = 5)]
fn reserve_stock(_: &OrderPlaced, log: &mut RunLog) {
    log.push("shipping::reserve_stock");
}

// Priority 20 alone would run it first; `after` puts it behind the card payment.
#[signals_core::on(OrderPlaced, priority = 20, after = billing::charge_card)]
fn send_confirmation(_: &OrderPlaced, log: &mut RunLog) {
    log.push("shipping::send_confirmation");
}

#[signals_core::on(OrderShipped)]
fn notify_carrier(_: &OrderShipped, log: &mut RunLog) {
    log.push("shipping::notify_carrier");
}
