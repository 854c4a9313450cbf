use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

fn total(_: &OrderCreated) -> u64 {
    1
}

#[on(OrderCreated, when = total)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
