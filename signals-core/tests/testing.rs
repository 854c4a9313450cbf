//! Feature `testing`: recorders, wiring assertions and muting, each confined to its thread.

use std::sync::{Arc, Barrier};
use std::thread;

use signals_core::testing::{self, Recorder};
use signals_core::{notify, on, Signal};

#[derive(Signal, Debug)]
#[signal(context = Vec<&'static str>)]
struct OrderCreated {
    total: u64,
}

#[derive(Signal)]
struct OrderShipped;

#[on(OrderCreated, priority = 2)]
fn bill(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("bill");
}

#[on(OrderCreated, priority = 1)]
fn audit(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("audit");
}

#[on(OrderCreated)]
fn email(_: &OrderCreated, log: &mut Vec<&'static str>) {
    log.push("email");
}

fn place(total: u64) -> Vec<&'static str> {
    let mut log = Vec::new();
    notify(&OrderCreated { total }, &mut log).unwrap();
    log
}

#[test]
fn a_recorder_counts_and_watches_what_its_thread_notifies() {
    let recorder = Recorder::start();
    let large = recorder.watch(|order: &OrderCreated| order.total > 100);
    place(50);
    place(500);
    notify(&OrderShipped, &mut ()).unwrap();

    recorder.assert_notified::<OrderCreated>();
    recorder.assert_notified_times::<OrderCreated>(2);
    recorder.assert_notified_times::<OrderShipped>(1);
    assert_eq!(large.count(), 1);
    assert_eq!(
        recorder.renderings::<OrderCreated>(),
        ["OrderCreated { total: 50 }", "OrderCreated { total: 500 }"]
    );
    // `OrderShipped` does not implement `Debug`: recorded, without a rendering.
    assert_eq!(recorder.renderings::<OrderShipped>(), [""]);
    assert_eq!(
        recorder.notified(),
        [
            "testing::OrderCreated",
            "testing::OrderCreated",
            "testing::OrderShipped"
        ]
    );
}

#[test]
#[should_panic(
    expected = "expected `testing::OrderShipped` to be notified, but it was notified 0 times; notified: [\"OrderCreated { total: 1 }\"]"
)]
fn assert_notified_lists_what_was_notified() {
    let recorder = Recorder::start();
    place(1);
    recorder.assert_notified::<OrderShipped>();
}

#[test]
#[should_panic(expected = "expected `testing::OrderCreated` not to be notified")]
fn assert_not_notified_fails_when_it_was() {
    let recorder = Recorder::start();
    place(1);
    recorder.assert_not_notified::<OrderCreated>();
}

#[test]
fn assert_wired_accepts_a_registered_handler() {
    testing::assert_wired::<OrderCreated>("testing::audit");
}

#[test]
#[should_panic(
    expected = "`testing::refund` does not handle `testing::OrderCreated`; its handlers are [\"testing::bill\", \"testing::audit\", \"testing::email\"]"
)]
fn assert_wired_lists_the_actual_handlers() {
    testing::assert_wired::<OrderCreated>("testing::refund");
}

#[test]
fn mute_and_only_apply_to_this_thread_while_the_guard_lives() {
    let muted_here = Arc::new(Barrier::new(2));
    let checked_there = Arc::new(Barrier::new(2));
    let other = {
        let (muted_here, checked_there) = (Arc::clone(&muted_here), Arc::clone(&checked_there));
        thread::spawn(move || {
            muted_here.wait();
            let log = place(1);
            checked_there.wait();
            log
        })
    };
    {
        let _muted = testing::mute("testing::audit");
        muted_here.wait();
        assert_eq!(place(1), ["bill", "email"]);
        checked_there.wait();
        let _only = testing::only::<OrderCreated>(&["testing::email"]);
        assert_eq!(place(1), ["email"]);
    }
    assert_eq!(place(1), ["bill", "audit", "email"]);
    assert_eq!(other.join().unwrap(), ["bill", "audit", "email"]);
}

#[test]
#[should_panic(expected = "no handler named `testing::nope` is linked into this program")]
fn muting_an_unknown_handler_panics() {
    let _muted = testing::mute("testing::nope");
}

#[test]
#[should_panic(
    expected = "`shop_handlers::email::send_welcome_email` does not handle `testing::OrderShipped`: `testing::OrderShipped` has no handlers; if they are in another crate, link it with `use that_crate as _;`"
)]
fn assert_wired_says_how_to_link_a_forgotten_crate_when_nothing_handles_the_signal() {
    testing::assert_wired::<OrderShipped>("shop_handlers::email::send_welcome_email");
}

#[test]
#[should_panic(
    expected = "no handler of crate `shop_handlers` is linked into this program: if it is a dependency, link it with `use shop_handlers as _;`"
)]
fn assert_wired_names_the_unlinked_crate() {
    testing::assert_wired::<OrderCreated>("shop_handlers::email::send_welcome_email");
}

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

#[test]
#[should_panic(
    expected = "`testing::inner` is ambiguous: different functions at signals-core/tests/testing.rs:"
)]
fn muting_a_name_two_functions_share_panics() {
    let _muted = testing::mute("testing::inner");
}
