use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
struct Handler;

fn main() {}
