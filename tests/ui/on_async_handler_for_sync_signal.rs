use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
async fn handler(_signal: &OrderCreated) {}

fn main() {}
