use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[derive(Signal)]
pub struct OrderShipped;

fn is_shipped(_: &OrderShipped) -> bool {
    true
}

#[on(OrderCreated, when = is_shipped)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
