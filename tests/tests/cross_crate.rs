//! Signals declared in `wire-signals`, handled in `wire-handlers` (private nested modules) and
//! here: one table, one order, no collisions between signals that share a type name.

// Nothing else here names `wire_handlers`; this line is what links it (see the README).
use wire_handlers as _;

use signals_core::{handlers, notify, on, Signal, SyncSignal};
use wire_signals::{billing, shipping, OrderPlaced, Trace};

#[on(OrderPlaced, priority = 5)]
fn charge_card(_: &OrderPlaced, trace: &mut Trace) {
    trace.calls.push("cross_crate::charge_card");
}

#[on(OrderPlaced)]
fn audit(_: &OrderPlaced, trace: &mut Trace) {
    trace.calls.push("cross_crate::audit");
}

#[on(OrderPlaced, priority = -1)]
fn archive(_: &OrderPlaced, trace: &mut Trace) {
    trace.calls.push("cross_crate::archive");
}

fn run<S: SyncSignal<Context<'static> = Trace>>(signal: &S) -> Vec<&'static str> {
    let mut trace = Trace::default();
    notify(signal, &mut trace).unwrap();
    trace.calls
}

fn names<S: Signal>() -> Vec<&'static str> {
    handlers::<S>().map(|h| h.name()).collect()
}

#[test]
fn handlers_from_every_crate_run_in_priority_then_name_order() {
    let expected = [
        "cross_crate::charge_card",
        "wire_handlers::orders::nested::reserve_stock",
        "cross_crate::audit",
        "wire_handlers::orders::log_order",
        "cross_crate::archive",
    ];
    assert_eq!(run(&OrderPlaced { id: 1 }), expected);
    assert_eq!(names::<OrderPlaced>(), expected);
}

#[test]
fn signals_with_the_same_type_name_have_separate_tables() {
    assert_eq!(
        run(&billing::Event),
        ["wire_handlers::events::on_billing_event"]
    );
    assert_eq!(
        run(&shipping::Event(3)),
        ["wire_handlers::events::on_shipping_event"]
    );
    assert_eq!(
        run(&wire_handlers::OrderPlaced),
        ["wire_handlers::events::on_local_order_placed"]
    );
}

#[test]
fn a_crate_nothing_references_is_not_linked() {
    // `wire-unlinked` is a dependency of this package but no code here names it, so rustc
    // does not link it and its handler is absent. `use wire_unlinked as _;` would add it.
    assert!(!names::<OrderPlaced>().contains(&"wire_unlinked::never_linked"));
}

#[test]
fn handler_locations_point_at_their_definitions() {
    let reserve = handlers::<OrderPlaced>()
        .find(|h| h.name().ends_with("::reserve_stock"))
        .unwrap();
    assert!(
        reserve.file().ends_with("wire-handlers/src/lib.rs"),
        "{}",
        reserve.file()
    );
    assert_eq!(reserve.priority(), 5);
    assert_eq!(reserve.signal().path(), "wire_signals::OrderPlaced");
}
