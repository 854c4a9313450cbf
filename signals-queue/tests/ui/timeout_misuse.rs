use signals_core::{on, Signal};

#[derive(Signal, serde::Serialize, serde::Deserialize)]
pub struct OrderCreated;

#[on(OrderCreated, timeout = "30s")]
fn not_queued(_signal: &OrderCreated) {}

#[on(OrderCreated, queue, timeout = "30 seconds please")]
fn unreadable(_signal: &OrderCreated) {}

#[on(OrderCreated, queue, timeout = "0s")]
fn zero(_signal: &OrderCreated) {}

#[on(OrderCreated, publish = "shop.orders", timeout = "5s")]
fn published(_signal: &OrderCreated) -> u32 {
    1
}

fn main() {}
