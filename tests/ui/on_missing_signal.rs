use signals_core::on;

#[on]
fn handler(_signal: &u32) {}

fn main() {}
