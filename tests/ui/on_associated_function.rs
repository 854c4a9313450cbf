use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

pub struct Billing;

impl Billing {
    #[on(OrderCreated)]
    fn handler(_signal: &OrderCreated) {}
}

fn main() {}
