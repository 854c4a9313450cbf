//! A wasm smoke test: signals declared here, handlers in the `billing` and `shipping` modules,
//! with priorities and an `after` constraint. Prints the order the handlers ran in, then the
//! catalog; `expected.txt` is the exact output.
//!
//! `scripts/wasm_smoke.py` builds it for `wasm32-wasip1` (where `signals-core` registers through
//! constructors) and runs it under wasmtime; the test below checks the same output natively.

mod billing;
mod shipping;

use std::fmt::Write;

use signals_core::{catalog, notify, Signal, SyncSignal};

/// The handlers append their names: the run order.
type RunLog = Vec<&'static str>;

/// An order was placed: handlers in both modules, one of them ordered with `after`.
#[derive(Signal)]
#[signal(context = RunLog)]
pub struct OrderPlaced;

/// An order was shipped: equal priorities, so the handlers' full names decide.
#[derive(Signal)]
#[signal(context = RunLog)]
pub struct OrderShipped;

/// Nobody handles it: the catalog lists it anyway.
#[derive(Signal)]
pub struct OrderCancelled;

/// What the program prints: each signal's run order, then the catalog.
fn report() -> String {
    let mut out = String::new();
    writeln!(out, "OrderPlaced: {}", run(&OrderPlaced).join(", ")).unwrap();
    writeln!(out, "OrderShipped: {}", run(&OrderShipped).join(", ")).unwrap();
    out.push_str("catalog:\n");
    for signal in catalog() {
        let count = signal.handlers().len();
        writeln!(out, "{}  ({count} handlers)", signal.path()).unwrap();
        for handler in signal.handlers() {
            writeln!(out, "  {:>4}  {}", handler.priority(), handler.name()).unwrap();
        }
    }
    out
}

/// Notifies `signal` and returns the names its handlers logged, in run order.
fn run<S: SyncSignal + for<'c> Signal<Context<'c> = RunLog>>(signal: &S) -> RunLog {
    let mut log = RunLog::new();
    notify(signal, &mut log).expect("no handler fails");
    log
}

fn main() {
    print!("{}", report());
}

#[cfg(test)]
mod tests {
    #[test]
    fn prints_the_expected_order_natively() {
        assert_eq!(super::report(), include_str!("../expected.txt"));
    }
}
