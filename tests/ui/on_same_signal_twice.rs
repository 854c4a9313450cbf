use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
#[on(OrderCreated, priority = 1)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
