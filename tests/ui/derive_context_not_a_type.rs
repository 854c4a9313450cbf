use signals_core::Signal;

#[derive(Signal)]
#[signal(context = 42)]
pub struct OrderCreated;

fn main() {}
