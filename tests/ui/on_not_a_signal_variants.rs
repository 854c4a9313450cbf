// A type without `#[derive(Signal)]`, named as a path, with a filter, with a context, and by an
// `async fn` handler: still one error per handler, at the signal's path.
use signals_core::on;

mod orders {
    pub struct OrderCreated {
        pub id: u64,
    }
}

pub struct Db;

#[on(orders::OrderCreated, when = |o| o.id > 3)]
fn filtered(_signal: &orders::OrderCreated) {}

#[on(crate::orders::OrderCreated, priority = 1)]
fn with_context(_signal: &orders::OrderCreated, _db: &mut Db) -> Result<(), std::io::Error> {
    Ok(())
}

#[on(orders::OrderCreated)]
async fn later(_signal: &orders::OrderCreated, _db: &Db) {}

fn main() {}
