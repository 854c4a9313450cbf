#![deny(unused_must_use)]

use signals_core::Signal;

#[derive(Signal)]
pub struct OrderCreated;

fn main() {
    signals_core::notify(&OrderCreated, &mut ());
}
