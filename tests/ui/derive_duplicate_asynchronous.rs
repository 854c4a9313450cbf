use signals_core::Signal;

#[derive(Signal)]
#[signal(asynchronous, asynchronous)]
pub struct OrderCreated;

fn main() {}
