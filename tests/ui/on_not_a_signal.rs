use signals_core::on;

pub struct OrderCreated;

#[on(OrderCreated)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
