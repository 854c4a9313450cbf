use signals_core::Signal;

#[derive(Signal)]
pub struct Renamed<'a> {
    pub name: &'a str,
}

fn main() {}
