//! `after = handler` and `before = handler`: constraints on top of priorities, resolved once.

use signals_core::{check_order, handlers, notify, on, Signal};

#[derive(Signal)]
#[signal(context = Vec<&'static str>)]
struct OrderCreated;

mod billing {
    use super::OrderCreated;

    #[signals_core::on(OrderCreated)]
    pub(crate) fn create_billing_record(_: &OrderCreated, log: &mut Vec<&'static str>) {
        log.push("billing");
    }
}

// Priority 10 would put it first; `after` wins, and it runs right after billing.
#[on(OrderCreated, priority = 10, after = billing::create_billing_record)]
fn send_receipt(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("receipt");
}

#[on(OrderCreated, priority = 5)]
fn reserve_stock(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("stock");
}

#[on(OrderCreated, priority = -5, before = billing::create_billing_record)]
fn check_fraud(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("fraud");
}

#[on(OrderCreated, after = send_receipt, after = reserve_stock)]
fn archive(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("archive");
}

#[test]
fn constraints_hold_and_priorities_order_the_rest() {
    let mut log = Vec::new();
    notify(&OrderCreated, &mut log).unwrap();
    // stock (5) is free to go first; fraud must precede billing, receipt follows billing,
    // archive follows receipt and stock.
    assert_eq!(log, ["stock", "fraud", "billing", "receipt", "archive"]);
    let names: Vec<_> = handlers::<OrderCreated>().map(|h| h.name()).collect();
    assert_eq!(
        names,
        [
            "relative_order::reserve_stock",
            "relative_order::check_fraud",
            "relative_order::billing::create_billing_record",
            "relative_order::send_receipt",
            "relative_order::archive",
        ]
    );
}

#[test]
fn check_order_accepts_a_consistent_program() {
    check_order().unwrap();
}
