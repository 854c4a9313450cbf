use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[derive(Signal)]
pub struct OrderShipped;

#[on(OrderCreated)]
fn handler(_signal: &OrderShipped) {}

fn main() {}
