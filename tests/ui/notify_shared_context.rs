use signals_core::Signal;

pub struct AppCtx;

#[derive(Signal)]
#[signal(context = AppCtx)]
pub struct OrderCreated;

fn main() {
    let ctx = AppCtx;
    let _ = signals_core::notify(&OrderCreated, &ctx);
}
