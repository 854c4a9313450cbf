use signals_core::{on, Signal};

pub struct AppCtx<'a> {
    pub name: &'a str,
}

#[derive(Signal)]
#[signal(context = AppCtx<'_>)]
pub struct OrderCreated;

// The context borrows for the caller's lifetime, not for `'static`.
#[on(OrderCreated)]
fn handler(_signal: &OrderCreated, _ctx: &mut AppCtx<'static>) {}

fn main() {}
