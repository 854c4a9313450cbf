use serde::Serialize;
use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated {
    pub order_id: i64,
}

#[derive(Serialize)]
pub struct OrderCreatedMessage {
    pub order_id: i64,
}

#[on(OrderCreated, publish = "shop.orders.created")]
fn order_created_message(signal: &OrderCreated) -> OrderCreatedMessage {
    OrderCreatedMessage { order_id: signal.order_id }
}

fn main() {}
