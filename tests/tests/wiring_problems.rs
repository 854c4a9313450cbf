//! Wiring mistakes the compiler cannot see: each affects only its own signal, `check_order`
//! lists every one, the catalog shows each under its signal, and every other signal works.

use signals_core::{catalog, check_order, handlers, notify, on, Signal};

// A cycle: `warm_caches` after `migrate`, `migrate` after `warm_caches`.
#[derive(Signal)]
struct Deployed;

#[on(Deployed, after = migrate)]
fn warm_caches(_: &Deployed) {}

#[on(Deployed, after = warm_caches)]
fn migrate(_: &Deployed) {}

#[on(Deployed)]
fn announce(_: &Deployed) {}

// `after` naming a function of the right shape that is not a handler.
#[derive(Signal)]
struct Invoiced;

fn not_registered(_: &Invoiced) {}

#[on(Invoiced, after = not_registered)]
fn send_invoice(_: &Invoiced) {}

// One function registered twice for one signal, through two paths to it.
#[derive(Signal)]
struct Refunded;

#[on(Refunded)]
#[on(crate::Refunded)]
fn refund(_: &Refunded) {}

// Two different functions with one full name: `fn inner` in two function bodies.
#[derive(Signal)]
struct Tick;

#[allow(dead_code)]
fn first_scope() {
    #[on(Tick)]
    fn inner(_: &Tick) {}
}

#[allow(dead_code)]
fn second_scope() {
    #[on(Tick)]
    fn inner(_: &Tick) {}
}

// A signal with nothing wrong.
#[derive(Signal)]
#[signal(context = Vec<&'static str>)]
struct Unrelated;

#[on(Unrelated)]
fn fine(_: &Unrelated, log: &mut Vec<&'static str>) {
    log.push("fine");
}

const FILE: &str = "tests/tests/wiring_problems.rs";

#[test]
fn other_signals_work() {
    let mut log = Vec::new();
    notify(&Unrelated, &mut log).unwrap();
    assert_eq!(log, ["fine"]);
}

#[test]
fn a_cycle_fails_its_own_notify_naming_the_handlers_and_their_lines() {
    for _ in 0..2 {
        let error = notify(&Deployed, &mut ()).unwrap_err();
        let problem = error.wiring_problem().expect("a wiring problem");
        assert!(problem.prevents_notify());
        let names: Vec<_> = problem.handlers().iter().map(|h| h.name()).collect();
        assert_eq!(
            names,
            ["wiring_problems::migrate", "wiring_problems::warm_caches"]
        );
        assert_eq!(
            error.to_string(),
            format!(
                "signal `wiring_problems::Deployed` can't be notified, no handler ran: the `after`/`before` constraints of `wiring_problems::Deployed`'s handlers form a cycle: `wiring_problems::migrate` ({FILE}:13) before `wiring_problems::warm_caches` ({FILE}:10), `wiring_problems::warm_caches` ({FILE}:10) before `wiring_problems::migrate` ({FILE}:13); no order satisfies them, so `Deployed` cannot be notified until one is removed"
            )
        );
    }
}

#[test]
fn after_naming_a_function_that_is_not_a_handler_fails_its_own_notify() {
    let error = notify(&Invoiced, &mut ()).unwrap_err();
    assert_eq!(
        error.wiring_problem().unwrap().to_string(),
        format!("`wiring_problems::send_invoice` ({FILE}:25) must run after `not_registered`, which is not a handler of `wiring_problems::Invoiced` in this program: give it `#[on(Invoiced)]`, or link the crate that defines it (`use that_crate as _;`)")
    );
}

#[test]
fn a_function_registered_twice_for_one_signal_fails_its_notify() {
    let error = notify(&Refunded, &mut ()).unwrap_err();
    assert_eq!(
        error.wiring_problem().unwrap().to_string(),
        format!("`wiring_problems::refund` is registered 2 times for `wiring_problems::Refunded` ({FILE}:32, {FILE}:33): remove all but one `#[on]`")
    );
}

#[test]
fn same_named_handlers_are_reported_but_both_run() {
    notify(&Tick, &mut ()).unwrap();
    assert_eq!(handlers::<Tick>().len(), 2);
    let problems: Vec<_> = catalog().get::<Tick>().problems().collect();
    assert_eq!(problems.len(), 1);
    assert!(!problems[0].prevents_notify());
    assert_eq!(
        problems[0].to_string(),
        format!("2 different handler functions are named `wiring_problems::inner` ({FILE}:42, {FILE}:48): rename all but one, so that the catalog, `after`/`before` messages and `testing::mute` can tell them apart")
    );
}

#[test]
fn check_order_lists_every_problem() {
    let error = check_order().unwrap_err();
    let signals: Vec<_> = error
        .problems()
        .iter()
        .map(|p| p.signals()[0].name())
        .collect();
    assert_eq!(signals, ["Deployed", "Invoiced", "Refunded", "Tick"]);
    assert_eq!(error.to_string().lines().count(), 4);
}

#[test]
fn the_catalog_still_prints_and_shows_each_problem_under_its_signal() {
    let table = catalog().to_string();
    let deployed = table
        .lines()
        .skip_while(|line| !line.starts_with("wiring_problems::Deployed "))
        .take(5)
        .collect::<Vec<_>>();
    assert!(deployed[4].starts_with("    ! the `after`/`before` constraints of `wiring_problems::Deployed`'s handlers form a cycle"), "{table}");
    assert!(
        table.contains("wiring_problems::Unrelated  (context: Vec<&'static str>; 1 handler)\n"),
        "{table}"
    );
    assert!(
        table.contains("    ! 2 different handler functions are named `wiring_problems::inner`"),
        "{table}"
    );
}
