use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[derive(Signal)]
pub struct OrderShipped;

#[on(OrderCreated, OrderShipped)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
