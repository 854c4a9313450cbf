use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated, max_attempts = 5)]
fn send_welcome_email(_signal: &OrderCreated) {}

fn main() {}
