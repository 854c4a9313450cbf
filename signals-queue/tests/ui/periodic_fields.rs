use std::time::SystemTime;

use signals_core::Signal;

pub struct NoDefault;

#[derive(Signal)]
#[signal(every = "1s")]
pub struct FieldWithoutDefault {
    #[signal(tick)]
    pub at: SystemTime,
    pub label: NoDefault,
}

pub struct Label;

#[derive(Signal)]
#[signal(every = "1s")]
pub struct TickNotATime {
    #[signal(tick)]
    pub at: Label,
}

fn main() {}
