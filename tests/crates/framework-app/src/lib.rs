//! An application that reaches signals only through `framework::signals`.

use framework::signals::{self, on, Signal};

/// Counts deploys.
#[derive(Signal)]
#[signal(crate = framework::signals, context = u32)]
pub struct Deployed;

#[on(Deployed, crate = framework::signals)]
fn count_deploy(_: &Deployed, deploys: &mut u32) {
    *deploys += 1;
}

/// Notifies `Deployed` and returns how many handlers counted it.
pub fn deploy() -> Result<u32, signals::Error> {
    let mut deploys = 0;
    signals::notify(&Deployed, &mut deploys)?;
    Ok(deploys)
}
