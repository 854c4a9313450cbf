use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[derive(Signal)]
pub struct OrderShipped;

#[on(OrderShipped)]
fn notify_carrier(_signal: &OrderShipped) {}

#[on(OrderCreated, after = notify_carrier)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
