use signals_core::Signal;

#[derive(Signal)]
pub union Bits {
    pub int: u32,
    pub float: f32,
}

fn main() {}
