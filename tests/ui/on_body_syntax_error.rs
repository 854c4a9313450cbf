use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn handler(_signal: &OrderCreated) {
    let total = ;
}

fn main() {}
