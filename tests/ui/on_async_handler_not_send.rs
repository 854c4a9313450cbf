use std::rc::Rc;

use signals_core::{on, Signal};

#[derive(Signal)]
#[signal(asynchronous)]
pub struct OrderCreated;

async fn yield_now() {}

#[on(OrderCreated)]
async fn handler(_signal: &OrderCreated) {
    let not_send = Rc::new(1);
    yield_now().await;
    drop(not_send);
}

fn main() {}
