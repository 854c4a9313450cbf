use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

pub struct NotAnError;

#[on(OrderCreated)]
fn handler(_signal: &OrderCreated) -> Result<(), NotAnError> {
    Ok(())
}

fn main() {}
