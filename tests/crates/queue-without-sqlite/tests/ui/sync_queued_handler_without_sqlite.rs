use serde::{Deserialize, Serialize};
use signals_core::{on, Signal};

#[derive(Signal, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: i64,
}

#[on(OrderCreated, queue)]
fn send_welcome_email(_signal: &OrderCreated) {}

fn main() {}
