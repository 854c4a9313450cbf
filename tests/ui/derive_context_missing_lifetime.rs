use signals_core::Signal;

pub struct AppCtx<'a>(&'a str);

#[derive(Signal)]
#[signal(context = AppCtx)]
pub struct OrderCreated;

fn main() {}
