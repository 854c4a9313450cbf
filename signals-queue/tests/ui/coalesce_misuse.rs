use signals_core::{on, Signal};

#[derive(Signal, serde::Serialize, serde::Deserialize)]
pub struct ProductChanged {
    pub product_id: u64,
}

#[on(ProductChanged, coalesce = product_id)]
fn not_queued(_signal: &ProductChanged) {}

#[on(ProductChanged, publish = "products.changed", coalesce = product_id)]
fn published(_signal: &ProductChanged) -> u64 {
    1
}

#[on(ProductChanged, queue, coalesce = "product_id")]
fn a_string(_signal: &ProductChanged) {}

#[on(ProductChanged, queue, coalesce = product_id % 64)]
fn an_expression(_signal: &ProductChanged) {}

fn main() {}
