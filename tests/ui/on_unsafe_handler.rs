use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
unsafe fn handler(_signal: &OrderCreated) {}

fn main() {}
