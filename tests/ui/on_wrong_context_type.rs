use signals_core::{on, Signal};

pub struct AppCtx;
pub struct OtherCtx;

#[derive(Signal)]
#[signal(context = AppCtx)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn handler(_signal: &OrderCreated, _ctx: &mut OtherCtx) {}

fn main() {}
