use signals_core::{on, Signal};

pub struct AppCtx<'a> {
    pub tx: &'a rusqlite::Transaction<'a>,
}

impl signals_queue::Enqueue for AppCtx<'_> {
    fn transaction(&self) -> &rusqlite::Connection {
        self.tx
    }
}

impl<'c> signals_queue::FromJob<'c> for AppCtx<'c> {
    fn from_job(job: signals_queue::JobScope<'c>) -> Result<Self, signals_core::BoxError> {
        Ok(AppCtx { tx: job.transaction() })
    }
}

#[derive(Signal, serde::Serialize, serde::Deserialize)]
#[signal(context = AppCtx<'_>)]
pub struct OrderCreated;

#[on(OrderCreated, queue)]
async fn send_welcome_email(_signal: &OrderCreated) {}

fn main() {}
