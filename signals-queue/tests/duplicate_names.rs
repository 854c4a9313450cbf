//! A queued handler and a publishing function that share a job name: a worker (or relay) would
//! claim the other's jobs, so building one is an error naming both.

use serde::{Deserialize, Serialize};
use signals_core::{on, BoxError, Signal};
use signals_queue::{AsyncJobScope, AsyncWorker, EnqueueAsync, Error, FromJobAsync, Pool, Tx};

struct Ctx<'a> {
    tx: Tx<'a>,
}

impl EnqueueAsync for Ctx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for Ctx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        Ok(Ctx {
            tx: job.transaction(),
        })
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct OrderPlaced {
    id: i64,
}

#[on(OrderPlaced, queue, name = "orders.placed")]
async fn email(_: &OrderPlaced, _: &mut Ctx<'_>) {}

#[derive(Serialize)]
struct Message {
    id: i64,
}

#[on(OrderPlaced, publish = "orders.placed", name = "orders.placed")]
fn message(sig: &OrderPlaced) -> Message {
    Message { id: sig.id }
}

#[tokio::test]
async fn a_queued_handler_and_a_publishing_function_cannot_share_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let pool = Pool::connect(&url, 2).await.unwrap();
    let Err(error) = AsyncWorker::builder(pool).build().await else {
        panic!("the worker was built");
    };
    assert!(matches!(
        error,
        Error::DuplicateJobName {
            name: "orders.placed",
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("duplicate_names.rs"), "{message}");
}
