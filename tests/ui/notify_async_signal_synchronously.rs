use signals_core::{on, Signal};

#[derive(Signal)]
#[signal(asynchronous)]
pub struct OrderCreated;

#[on(OrderCreated)]
async fn handler(_signal: &OrderCreated) {}

fn main() {
    // Would skip `handler`: an asynchronous signal is notified with `notify_async(...).await`.
    let _ = signals_core::notify(&OrderCreated, &mut ());
}
