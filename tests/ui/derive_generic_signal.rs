use signals_core::Signal;

#[derive(Signal)]
pub struct Created<T> {
    pub value: T,
}

fn main() {}
