use std::rc::Rc;

use signals_core::Signal;

#[derive(Signal)]
#[signal(context = Rc<u32>, asynchronous)]
pub struct OrderCreated;

fn spawn<F: std::future::Future + Send + 'static>(_: F) {}

fn main() {
    // `tokio::spawn` needs a `Send` future; a context that is not `Send` makes it not `Send`.
    spawn(async {
        let mut ctx = Rc::new(1);
        let _ = signals_core::notify_async(&OrderCreated, &mut ctx).await;
    });
}
