use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn charge_card(_signal: &OrderCreated) {}

#[on(OrderCreated, after = charge_crad)]
fn send_receipt(_signal: &OrderCreated) {}

fn main() {}
