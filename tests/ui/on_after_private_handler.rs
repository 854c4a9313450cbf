use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

mod billing {
    #[signals_core::on(super::OrderCreated)]
    fn charge_card(_signal: &super::OrderCreated) {}
}

#[on(OrderCreated, after = billing::charge_card)]
fn send_receipt(_signal: &OrderCreated) {}

fn main() {}
