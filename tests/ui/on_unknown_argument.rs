use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated, priorty = 1)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
