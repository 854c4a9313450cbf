use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

fn not_a_handler(_amount: u64) {}

#[on(OrderCreated, after = not_a_handler)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
