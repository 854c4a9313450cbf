use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn handler<T: Default>(signal: &OrderCreated) {}

fn main() {}
