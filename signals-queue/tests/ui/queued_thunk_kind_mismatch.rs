// The soundness hole of the hidden API: a queued handler record whose thunk is async for a
// signal `notify` calls synchronously. `QueuedThunk`'s constructors require the signal's kind,
// so even hand-written code that reaches into `__private` cannot express it.
use signals_core::__private::{queued_handler_info, HandlerSpec, QueuedThunk};
use signals_core::Signal;

#[derive(Signal)]
pub struct OrderCreated;

fn record(spec: HandlerSpec) {
    let thunk: QueuedThunk<OrderCreated> = QueuedThunk::asynchronous(|_, _| unreachable!());
    let _ = queued_handler_info::<OrderCreated>(spec, thunk, false);
}

fn main() {}
