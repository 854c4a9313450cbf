//! `#[signal(context = AppCtx<'ctx>)]`, the form rustc suggests for a context type written
//! without its lifetime, means the same as `AppCtx<'_>`.

use signals_core::{notify, on, Signal};

struct AppCtx<'a> {
    log: &'a mut Vec<u64>,
}

#[derive(Signal)]
#[signal(context = AppCtx<'ctx>)]
struct OrderCreated {
    order_id: u64,
}

#[on(OrderCreated)]
fn record(sig: &OrderCreated, ctx: &mut AppCtx<'_>) {
    ctx.log.push(sig.order_id);
}

#[test]
fn the_suggested_ctx_lifetime_is_the_context_lifetime() {
    let mut log = Vec::new();
    notify(&OrderCreated { order_id: 7 }, &mut AppCtx { log: &mut log }).unwrap();
    assert_eq!(log, [7]);
}
