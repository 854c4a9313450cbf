//! Billing's handlers.

use crate::{OrderPlaced, OrderShipped, RunLog};

#[signals_core::on(OrderPlaced, priority = 10)]
pub(crate) fn charge_card(_: &OrderPlaced, log: &mut RunLog) {
    log.push("billing::charge_card");
}

#[signals_core::on(OrderPlaced)]
fn write_invoice(_: &OrderPlaced, log: &mut RunLog) {
    log.push("billing::write_invoice");
}

#[signals_core::on(OrderShipped)]
fn close_invoice(_: &OrderShipped, log: &mut RunLog) {
    log.push("billing::close_invoice");
}
