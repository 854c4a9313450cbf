use signals_core::{on, Signal};

#[derive(Signal)]
pub struct OrderCreated;

#[on(OrderCreated)]
fn handler(_signal: &OrderCreated) -> Result<u64, std::io::Error> {
    Ok(1)
}

fn main() {}
