use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated {
    pub total: u64,
}

#[on(OrderCreated, when = |o| o.amount > 100)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
