use signals_core::{on, Signal};

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

#[derive(Signal)]
#[signal(context = AppCtx<'_>)]
pub struct OrderCreated {
    pub order_id: i64,
}

#[derive(serde::Serialize)]
pub struct OrderCreatedMessage {
    pub order_id: i64,
}

#[on(OrderCreated, publish = "shop.orders.created")]
fn order_created_message(sig: &OrderCreated) -> OrderCreatedMessage {
    OrderCreatedMessage { order_id: sig.order_id }
}

fn main() {}
