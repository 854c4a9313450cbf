//! `notify` and `notify_all`: handler shapes, contexts, order, re-entrancy and errors.

use std::error::Error as _;
use std::fmt;

use signals_core::{handlers, notify, notify_all, on, BoxError, Signal};

/// The context of most signals here: what ran, in order.
#[derive(Default)]
struct Log {
    entries: Vec<String>,
}

impl Log {
    fn push(&mut self, entry: impl Into<String>) {
        self.entries.push(entry.into());
    }
}

#[derive(Debug, PartialEq)]
struct Declined {
    order_id: u64,
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "card declined for order {}", self.order_id)
    }
}

impl std::error::Error for Declined {}

// --- Every handler shape: (&S), (&S, &Ctx), (&S, &mut Ctx) × (), Result<(), E> ---

#[derive(Signal)]
#[signal(context = Log)]
struct Shapes {
    fail: bool,
}

#[on(Shapes, priority = 60)]
fn signal_only(_: &Shapes) {}

#[on(Shapes, priority = 50)]
fn signal_only_result(sig: &Shapes) -> Result<(), Declined> {
    match sig.fail {
        true => Err(Declined { order_id: 50 }),
        false => Ok(()),
    }
}

#[on(Shapes, priority = 40)]
fn shared_context(_: &Shapes, log: &Log) {
    assert!(log.entries.is_empty());
}

#[on(Shapes, priority = 30)]
fn shared_context_result(_: &Shapes, log: &Log) -> Result<(), std::io::Error> {
    assert!(log.entries.is_empty());
    Ok(())
}

#[on(Shapes, priority = 20)]
fn mut_context(_: &Shapes, log: &mut Log) {
    log.push("mut_context");
}

#[on(Shapes, priority = 10)]
fn mut_context_boxed_error(sig: &Shapes, log: &mut Log) -> Result<(), BoxError> {
    log.push("mut_context_boxed_error");
    match sig.fail {
        true => Err("boxed failure".into()),
        false => Ok(()),
    }
}

#[on(Shapes)]
fn mut_context_anyhow(sig: &Shapes, log: &mut Log) -> anyhow::Result<()> {
    log.push("mut_context_anyhow");
    anyhow::ensure!(!sig.fail, "anyhow failure");
    Ok(())
}

#[test]
fn every_handler_shape_runs_in_priority_order() {
    let mut log = Log::default();
    notify(&Shapes { fail: false }, &mut log).unwrap();
    assert_eq!(
        log.entries,
        [
            "mut_context",
            "mut_context_boxed_error",
            "mut_context_anyhow"
        ]
    );
    let names: Vec<_> = handlers::<Shapes>().map(|h| h.name()).collect();
    assert_eq!(
        names,
        [
            "dispatch::signal_only",
            "dispatch::signal_only_result",
            "dispatch::shared_context",
            "dispatch::shared_context_result",
            "dispatch::mut_context",
            "dispatch::mut_context_boxed_error",
            "dispatch::mut_context_anyhow",
        ]
    );
}

#[test]
fn handlers_stay_ordinary_functions() {
    let mut log = Log::default();
    mut_context(&Shapes { fail: false }, &mut log);
    assert_eq!(
        signal_only_result(&Shapes { fail: true }),
        Err(Declined { order_id: 50 })
    );
    assert_eq!(log.entries, ["mut_context"]);
}

// --- Errors ---

#[test]
fn the_first_error_stops_notify_and_names_its_handler() {
    let mut log = Log::default();
    let err = notify(&Shapes { fail: true }, &mut log).unwrap_err();

    assert!(log.entries.is_empty(), "no handler after the failure ran");
    assert_eq!(err.handler().name(), "dispatch::signal_only_result");
    assert_eq!(err.handler().priority(), 50);
    assert_eq!(err.signal().path(), "dispatch::Shapes");
    assert_eq!(err.failures().len(), 1);
    assert_eq!(
        err.to_string(),
        "handler `dispatch::signal_only_result` failed on signal `dispatch::Shapes`"
    );
    assert_eq!(
        err.downcast_ref::<Declined>(),
        Some(&Declined { order_id: 50 })
    );
    let source = err.source().expect("the handler's error is the source");
    assert_eq!(source.to_string(), "card declined for order 50");
    assert_eq!(
        source.downcast_ref::<Declined>(),
        Some(&Declined { order_id: 50 })
    );
    let owned = err.into_failures().remove(0).into_error();
    assert_eq!(
        *owned.downcast::<Declined>().unwrap(),
        Declined { order_id: 50 }
    );
}

#[test]
fn the_failing_handler_info_is_the_registered_one() {
    let err = notify(&Shapes { fail: true }, &mut Log::default()).unwrap_err();
    let registered = handlers::<Shapes>()
        .find(|h| h.name() == "dispatch::signal_only_result")
        .unwrap();
    assert!(std::ptr::eq(err.handler(), registered));
}

#[test]
fn notify_all_runs_every_handler_and_reports_every_failure_in_order() {
    let mut log = Log::default();
    let err = notify_all(&Shapes { fail: true }, &mut log).unwrap_err();

    assert_eq!(
        log.entries,
        [
            "mut_context",
            "mut_context_boxed_error",
            "mut_context_anyhow"
        ]
    );
    let failures: Vec<_> = err
        .failures()
        .map(|f| (f.handler().name(), f.error().to_string()))
        .collect();
    assert_eq!(
        failures,
        [
            (
                "dispatch::signal_only_result",
                "card declined for order 50".to_owned()
            ),
            (
                "dispatch::mut_context_boxed_error",
                "boxed failure".to_owned()
            ),
            ("dispatch::mut_context_anyhow", "anyhow failure".to_owned()),
        ]
    );
    assert_eq!(err.handler().name(), "dispatch::signal_only_result");
    assert_eq!(
        err.to_string(),
        "3 handlers failed on signal `dispatch::Shapes`: `dispatch::signal_only_result`, \
         `dispatch::mut_context_boxed_error`, `dispatch::mut_context_anyhow`"
    );
    assert!(err.downcast_ref::<Declined>().is_some());
}

#[test]
fn notify_all_succeeds_when_no_handler_fails() {
    let mut log = Log::default();
    notify_all(&Shapes { fail: false }, &mut log).unwrap();
    assert_eq!(log.entries.len(), 3);
}

#[test]
fn errors_are_send_sync_and_static() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<signals_core::Error>();
}

// --- The unit context and signals without handlers ---

#[derive(Signal)]
struct Ping;

static PINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[on(Ping)]
fn count_ping(_: &Ping) {
    PINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[on(Ping)]
fn count_ping_with_unit_context(_: &Ping, _: &mut ()) {
    PINGS.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn the_unit_context() {
    notify(&Ping, &mut ()).unwrap();
    assert_eq!(PINGS.load(std::sync::atomic::Ordering::Relaxed), 11);
}

#[derive(Signal)]
#[signal(context = Log)]
struct Unheard;

#[test]
fn a_signal_without_handlers_notifies_nothing() {
    let mut log = Log::default();
    notify(&Unheard, &mut log).unwrap();
    notify_all(&Unheard, &mut log).unwrap();
    assert_eq!(handlers::<Unheard>().len(), 0);
}

// --- A borrowed context, as in a database transaction ---

/// Stands for a database transaction that the caller owns.
struct Transaction {
    rows: Vec<(&'static str, u64)>,
}

/// A context that borrows the caller's transaction and a clock.
struct AppCtx<'a> {
    tx: &'a mut Transaction,
    now: &'a u64,
}

#[derive(Signal)]
#[signal(context = AppCtx<'_>)]
struct OrderCreated {
    order_id: u64,
}

#[derive(Signal)]
#[signal(context = AppCtx<'_>)]
struct InvoiceIssued {
    order_id: u64,
}

#[on(OrderCreated, priority = 1)]
fn create_billing_record(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), BoxError> {
    ctx.tx.rows.push(("billing", sig.order_id));
    // Re-entrant: the invoice's handlers run now, in the same transaction, before `audit`.
    notify(
        &InvoiceIssued {
            order_id: sig.order_id,
        },
        ctx,
    )?;
    Ok(())
}

#[on(OrderCreated)]
fn audit<'a>(sig: &OrderCreated, ctx: &AppCtx<'a>) -> Result<(), std::convert::Infallible> {
    assert_eq!(*ctx.now, 1_700_000_000);
    assert_eq!(
        ctx.tx.rows.len(),
        3,
        "billing and both invoice rows came first"
    );
    let _ = sig;
    Ok(())
}

#[on(OrderCreated, priority = -1)]
fn write_audit_row(sig: &OrderCreated, ctx: &mut AppCtx) {
    ctx.tx.rows.push(("audit", sig.order_id));
}

#[on(InvoiceIssued)]
fn email_invoice(sig: &InvoiceIssued, ctx: &mut AppCtx<'_>) {
    ctx.tx.rows.push(("invoice email", sig.order_id));
}

#[on(InvoiceIssued, priority = 1)]
fn store_invoice(sig: &InvoiceIssued, ctx: &mut AppCtx<'_>) {
    ctx.tx.rows.push(("invoice", sig.order_id));
}

#[test]
fn borrowed_context_and_reentrant_notify_run_depth_first() {
    let mut tx = Transaction { rows: Vec::new() };
    let now = 1_700_000_000;
    let mut ctx = AppCtx {
        tx: &mut tx,
        now: &now,
    };
    notify(&OrderCreated { order_id: 42 }, &mut ctx).unwrap();
    assert_eq!(
        tx.rows,
        [
            ("billing", 42),
            ("invoice", 42),
            ("invoice email", 42),
            ("audit", 42)
        ]
    );
}

// --- Every struct shape, and priorities from constant expressions ---

const HIGH: i32 = 100;

#[derive(Signal)]
#[signal(context = Log)]
struct Tuple(u8, &'static str);

#[derive(Signal)]
#[signal(context = Log)]
enum Payment {
    Captured { amount: u64 },
    Refunded,
}

#[on(Tuple, priority = HIGH - 1)]
fn tuple_second(sig: &Tuple, log: &mut Log) {
    log.push(format!("second {}", sig.0));
}

#[on(Tuple, priority = HIGH)]
fn tuple_first(sig: &Tuple, log: &mut Log) {
    log.push(format!("first {}", sig.1));
}

#[on(Payment)]
fn payment(sig: &Payment, log: &mut Log) {
    match sig {
        Payment::Captured { amount } => log.push(format!("captured {amount}")),
        Payment::Refunded => log.push("refunded"),
    }
}

#[test]
fn tuple_structs_enums_and_constant_priorities() {
    let mut log = Log::default();
    notify(&Tuple(7, "tuple"), &mut log).unwrap();
    notify(&Payment::Captured { amount: 5 }, &mut log).unwrap();
    notify(&Payment::Refunded, &mut log).unwrap();
    assert_eq!(
        log.entries,
        ["first tuple", "second 7", "captured 5", "refunded"]
    );
    let priorities: Vec<_> = handlers::<Tuple>().map(|h| h.priority()).collect();
    assert_eq!(priorities, [100, 99]);
}

// --- Equal priorities run by full name, whatever the source order ---

#[derive(Signal)]
#[signal(context = Log)]
struct Tie;

mod zeta {
    #[signals_core::on(super::Tie)]
    fn handler(_: &super::Tie, log: &mut super::Log) {
        log.push("zeta");
    }
}

#[on(Tie)]
fn beta(_: &Tie, log: &mut Log) {
    log.push("beta");
}

mod alpha {
    #[signals_core::on(super::Tie)]
    fn handler(_: &super::Tie, log: &mut super::Log) {
        log.push("alpha");
    }
}

#[on(Tie)]
fn r#type(_: &Tie, log: &mut Log) {
    log.push("type");
}

#[test]
fn equal_priorities_run_in_ascending_full_name() {
    let mut log = Log::default();
    notify(&Tie, &mut log).unwrap();
    // dispatch::alpha::handler < dispatch::beta < dispatch::type < dispatch::zeta::handler
    assert_eq!(log.entries, ["alpha", "beta", "type", "zeta"]);
    assert!(handlers::<Tie>().any(|h| h.name() == "dispatch::type"));
}

// --- One function registered for two signals ---

#[derive(Signal, Debug)]
#[signal(context = Log)]
struct Left;

#[derive(Signal, Debug)]
#[signal(context = Log)]
struct Right;

#[on(Left)]
#[on(Right)]
fn log_debug(sig: &dyn fmt::Debug, log: &mut Log) {
    log.push(format!("{sig:?}"));
}

#[test]
fn one_function_can_handle_several_signals() {
    let mut log = Log::default();
    notify(&Left, &mut log).unwrap();
    notify(&Right, &mut log).unwrap();
    assert_eq!(log.entries, ["Left", "Right"]);
}

// --- A context that is itself a reference, its lifetime elided ---

struct Config {
    currency: &'static str,
}

#[derive(Signal)]
#[signal(context = &Config)]
struct PriceQuoted {
    cents: u64,
}

#[on(PriceQuoted)]
fn check_currency(sig: &PriceQuoted, config: &&Config) -> Result<(), BoxError> {
    match (config.currency, sig.cents) {
        ("EUR", 1..) => Ok(()),
        (currency, cents) => Err(format!("cannot quote {cents} {currency}").into()),
    }
}

#[test]
fn a_reference_context_borrows_for_the_call() {
    let eur = Config { currency: "EUR" };
    notify(&PriceQuoted { cents: 5 }, &mut &eur).unwrap();
    let usd = Config { currency: "USD" };
    let err = notify(&PriceQuoted { cents: 5 }, &mut &usd).unwrap_err();
    assert_eq!(err.source().unwrap().to_string(), "cannot quote 5 USD");
    assert_eq!(
        signals_core::catalog().get::<PriceQuoted>().context(),
        "&Config"
    );
}
