//! The test kit (feature `testing`) on the async path, PostgreSQL and SQLite through sqlx: what
//! a `notify_async` enqueued reads back typed (uncommitted, in the caller's transaction, and
//! without the jobs of publishing functions), and the jobs drain in the test's own process.
//! (Running queued handlers inline, on the sync path, is the `testing` module's doc test.)

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{testing, with_db, AsyncJobScope, AsyncWorker, EnqueueAsync, FromJobAsync, Tx};

mod support;
use support::Db;

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

#[derive(Signal, Serialize, Deserialize, Debug, PartialEq, Clone)]
#[signal(context = Ctx<'_>, asynchronous)]
struct OrderShipped {
    order_id: i64,
}

/// Queued, on the `email` queue.
#[on(OrderShipped, queue = "email")]
async fn email_tracking(sig: &OrderShipped, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    with_db!(ctx.tx.reborrow(), |conn| sqlx::query(
        "INSERT INTO emails (order_id) VALUES ($1)"
    )
    .bind(sig.order_id)
    .execute(conn)
    .await
    .map(drop))
}

/// Queued, for even orders only.
#[on(OrderShipped, queue, when = |sig: &OrderShipped| sig.order_id % 2 == 0)]
async fn record_even(sig: &OrderShipped, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    with_db!(ctx.tx.reborrow(), |conn| sqlx::query(
        "INSERT INTO shipments (order_id) VALUES ($1)"
    )
    .bind(sig.order_id)
    .execute(conn)
    .await
    .map(drop))
}

#[derive(Serialize)]
struct ShippedMessage {
    id: i64,
}

/// A publishing function: its message is not an `OrderShipped`, so it is not listed.
#[on(OrderShipped, publish = "test.shipped")]
fn shipped_message(sig: &OrderShipped) -> ShippedMessage {
    ShippedMessage { id: sig.order_id }
}

async fn count(tx: Tx<'_>, sql: &'static str) -> i64 {
    with_db!(tx, |conn| sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(conn)
        .await
        .unwrap())
}

#[tokio::test]
async fn enqueued_jobs_read_back_typed_and_drain_in_the_tests_process() {
    for db in Db::all().await {
        let name = db.name();
        let mut tx = db.pool.begin().await.unwrap();
        let shipped = OrderShipped { order_id: 4 };
        notify_async(&shipped, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        notify_async(&OrderShipped { order_id: 5 }, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();

        // Before the commit, through the caller's transaction: both queued handlers' jobs for
        // 4, the email's alone for 5 (the filter), one event id per notify, and no publishing
        // function's row (its message is not an `OrderShipped`).
        let jobs = testing::enqueued_async::<OrderShipped>(tx.tx())
            .await
            .unwrap();
        let listed: Vec<(&str, &str, i64)> = jobs
            .iter()
            .map(|job| {
                (
                    job.handler.as_str(),
                    job.queue.as_str(),
                    job.signal.order_id,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("testing::email_tracking", "email", 4),
                ("testing::record_even", "default", 4),
                ("testing::email_tracking", "email", 5),
            ],
            "{name}"
        );
        assert_eq!(jobs[0].signal, shipped, "{name}");
        assert_eq!(jobs[0].event_id, jobs[1].event_id, "{name}");
        assert_ne!(jobs[0].event_id, jobs[2].event_id, "{name}");
        let outbox = count(
            tx.tx(),
            "SELECT COUNT(*) FROM signals_jobs WHERE handler = 'testing::shipped_message'",
        )
        .await;
        assert_eq!(outbox, 2, "{name}: the messages are in the outbox");
        tx.commit().await.unwrap();

        // Drained in this process: the handlers ran, nothing waits.
        AsyncWorker::builder(db.pool.clone())
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let mut conn = db.pool.begin().await.unwrap();
        assert!(
            testing::enqueued_async::<OrderShipped>(conn.tx())
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert_eq!(
            count(conn.tx(), "SELECT COUNT(*) FROM emails").await,
            2,
            "{name}"
        );
        assert_eq!(
            count(conn.tx(), "SELECT COUNT(*) FROM shipments").await,
            1,
            "{name}"
        );
        drop(conn);
        db.drop_schema().await;
    }
}
