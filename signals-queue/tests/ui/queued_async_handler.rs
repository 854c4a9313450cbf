use signals_core::{on, Signal};

#[derive(Signal)]
#[signal(asynchronous)]
pub struct OrderCreated;

#[on(OrderCreated, queue)]
async fn send_welcome_email(_signal: &OrderCreated) {}

fn main() {}
