//! A cycle of `after`/`before` constraints: `check_order` names it, and the first notify of
//! any signal panics with the same message.

use signals_core::{check_order, notify, on, Signal};

#[derive(Signal)]
struct Deployed;

#[on(Deployed, after = migrate)]
fn warm_caches(_: &Deployed) {}

#[on(Deployed, after = warm_caches)]
fn migrate(_: &Deployed) {}

#[on(Deployed)]
fn announce(_: &Deployed) {}

const CYCLE: &str = "the `after`/`before` constraints of `order_cycle::Deployed` form a cycle among [\"order_cycle::migrate\", \"order_cycle::warm_caches\"]";

#[test]
fn check_order_names_the_handlers_in_the_cycle() {
    let error = check_order().unwrap_err();
    assert_eq!(error.problems(), [CYCLE]);
    assert_eq!(error.to_string(), CYCLE);
}

#[test]
#[should_panic(
    expected = "form a cycle among [\"order_cycle::migrate\", \"order_cycle::warm_caches\"]"
)]
fn the_first_notify_panics_with_the_cycle() {
    let _ = notify(&Deployed, &mut ());
}
