use signals_core::Signal;

pub struct AppCtx<'a>(&'a str);

#[derive(Signal)]
#[signal(context = AppCtx<'a>)]
pub struct OrderCreated;

fn main() {}
