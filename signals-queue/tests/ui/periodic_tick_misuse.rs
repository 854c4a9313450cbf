use std::time::SystemTime;

use signals_core::Signal;

#[derive(Signal)]
pub struct NotPeriodic {
    #[signal(tick)]
    pub at: SystemTime,
}

#[derive(Signal)]
#[signal(every = "1s")]
pub struct TwoTicks {
    #[signal(tick)]
    pub at: SystemTime,
    #[signal(tick)]
    pub again: SystemTime,
}

#[derive(Signal)]
#[signal(every = "1s")]
pub enum Periodic {
    Tick,
}

#[derive(Signal)]
#[signal(every = "1s")]
pub struct UnknownFieldArgument {
    #[signal(tock)]
    pub at: SystemTime,
}

fn main() {}
