use serde::{Deserialize, Serialize};
use signals_core::{on, Signal};
use signals_queue::{FromJob, JobScope};

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

impl<'c> FromJob<'c> for AppCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, signals_core::BoxError> {
        Ok(AppCtx { tx: job.transaction() })
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = AppCtx<'_>)]
pub struct OrderCreated {
    pub order_id: i64,
}

#[on(OrderCreated, queue)]
fn send_welcome_email(_signal: &OrderCreated, _ctx: &mut AppCtx<'_>) {}

fn main() {}
