use signals_core::{on, Signal};
use signals_queue::{Enqueue, FromJob, JobScope};

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

impl Enqueue for AppCtx<'_> {
    fn transaction(&self) -> &rusqlite::Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for AppCtx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, signals_core::BoxError> {
        Ok(AppCtx { tx: job.transaction() })
    }
}

// Deserialize but not Serialize: the jobs could not be written.
#[derive(Signal, serde::Deserialize)]
#[signal(context = AppCtx<'_>)]
pub struct OrderCreated {
    pub order_id: i64,
}

#[on(OrderCreated, queue)]
fn send_welcome_email(_signal: &OrderCreated, _ctx: &mut AppCtx<'_>) {}

fn main() {}
