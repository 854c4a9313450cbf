use signals_core::{on, Signal};

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

impl signals_queue::Enqueue for AppCtx<'_> {
    fn transaction(&self) -> &rusqlite::Connection {
        self.tx
    }
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
async fn is_async(sig: &OrderCreated) -> OrderCreatedMessage {
    OrderCreatedMessage { order_id: sig.order_id }
}

#[on(OrderCreated, publish = "shop.orders.created")]
fn returns_nothing(_sig: &OrderCreated) {}

#[on(OrderCreated, queue, publish = "shop.orders.created")]
fn both(sig: &OrderCreated) -> OrderCreatedMessage {
    OrderCreatedMessage { order_id: sig.order_id }
}

#[on(OrderCreated, publish = "shop.orders.*")]
fn wildcard(sig: &OrderCreated) -> OrderCreatedMessage {
    OrderCreatedMessage { order_id: sig.order_id }
}

fn main() {}
