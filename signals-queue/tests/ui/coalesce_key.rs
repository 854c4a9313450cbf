use rusqlite::{Connection, Transaction};
use signals_core::{on, BoxError, Signal};
use signals_queue::{Enqueue, FromJob, JobScope};

pub struct Ctx<'a> {
    tx: &'a Transaction<'a>,
}

impl Enqueue for Ctx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for Ctx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(Ctx {
            tx: job.transaction(),
        })
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sku(u64);

#[derive(Signal, serde::Serialize, serde::Deserialize)]
#[signal(context = Ctx<'_>)]
pub struct ProductChanged {
    pub product_id: u64,
    pub sku: Sku,
}

#[on(ProductChanged, queue, coalesce = sku)]
fn not_display(_signal: &ProductChanged, _ctx: &mut Ctx<'_>) {}

#[on(ProductChanged, queue, coalesce = product)]
fn no_such_field(_signal: &ProductChanged, _ctx: &mut Ctx<'_>) {}

#[on(ProductChanged, queue, coalesce = |s| s.sku.clone())]
fn closure_not_display(_signal: &ProductChanged, _ctx: &mut Ctx<'_>) {}

fn main() {}
