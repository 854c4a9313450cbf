use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn handler(_signal: &mut OrderCreated) {}

fn main() {}
