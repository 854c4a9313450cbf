use signals_core::Signal;

pub struct AppCtx;

#[derive(Signal)]
#[signal(context = AppCtx)]
#[signal(context = ())]
pub struct OrderCreated;

fn main() {}
