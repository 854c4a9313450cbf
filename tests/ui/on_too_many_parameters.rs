use signals_core::{on, Signal};

pub struct AppCtx;

#[derive(Signal)]
#[signal(context = AppCtx)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn handler(_signal: &OrderCreated, _ctx: &mut AppCtx, _extra: u32) {}

fn main() {}
