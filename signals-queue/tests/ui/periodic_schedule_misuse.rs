use signals_core::Signal;

#[derive(Signal)]
#[signal(every = "soon")]
pub struct NotADuration;

#[derive(Signal)]
#[signal(every = "0s")]
pub struct Zero;

#[derive(Signal)]
#[signal(every = "1h", cron = "0 3 * * *")]
pub struct TwoSchedules;

#[derive(Signal)]
#[signal(every = "1h", zone = "Europe/Paris")]
pub struct ZoneWithoutCron;

#[derive(Signal)]
#[signal(cron = "0 3 *")]
pub struct ThreeFields;

fn main() {}
