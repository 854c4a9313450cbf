use signals_core::{on, Signal};

pub struct AppCtx;

#[derive(Signal)]
#[signal(contxt = AppCtx)]
pub struct OrderCreated;

// No second error here: the failed derive still implements `Signal`.
#[on(OrderCreated)]
fn handler(_signal: &OrderCreated) {}

fn main() {}
