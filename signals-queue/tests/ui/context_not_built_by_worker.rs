use serde::{Deserialize, Serialize};
use signals_core::{on, Signal};
use signals_queue::Enqueue;

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

impl Enqueue for AppCtx<'_> {
    fn transaction(&self) -> &rusqlite::Connection {
        self.tx
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>)]
pub struct OrderCreated {
    pub order_id: i64,
}

#[on(OrderCreated, queue)]
fn send_welcome_email(_signal: &OrderCreated, _ctx: &mut AppCtx<'_>) {}

fn main() {}
