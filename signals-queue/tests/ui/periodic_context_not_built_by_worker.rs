use std::time::SystemTime;

use signals_core::Signal;

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

#[derive(Signal)]
#[signal(context = AppCtx<'_>, every = "1h")]
pub struct Hourly {
    #[signal(tick)]
    pub at: SystemTime,
}

fn main() {}
