use signals_core::Signal;

pub struct AppCtx;

#[derive(Signal)]
#[signal(context = AppCtx)]
pub struct OrderCreated;

fn main() {
    let _ = signals_core::notify(&OrderCreated, &mut ());
}
