pub struct OrderCreated;

fn main() {
    let _ = signals_core::notify(&OrderCreated, &mut ());
}
