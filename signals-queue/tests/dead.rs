//! The queue's own signal of a dead job, on both databases: the fleet's leader announces each
//! death once, whichever worker recorded it, to `#[on(AsyncJobDead)]` handlers in a
//! transaction of its own; the jobs of a queued `AsyncJobDead` handler that go dead are not
//! announced again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{with_db, AsyncJobDead, AsyncJobDeadCtx, AsyncWorker, RetryPolicy};

mod support;
use support::{wait_for, Ctx, Db};

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Charged;

/// Always fails, once: dead after its only attempt.
#[on(Charged, queue = "billing", max_attempts = 1)]
async fn capture(_: &Charged, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    Err("the card was declined".into())
}

/// Records each death it is told of, in the announcement's transaction.
#[on(AsyncJobDead)]
async fn record_death(dead: &AsyncJobDead, ctx: &mut AsyncJobDeadCtx<'_>) -> Result<(), BoxError> {
    let sql = "INSERT INTO effects (n) VALUES ($1)";
    with_db!(ctx.transaction(), |conn| sqlx::query(sql)
        .bind(dead.id)
        .execute(conn)
        .await
        .map(drop))?;
    assert!(dead.handler.ends_with("::capture"), "{dead:?}");
    assert_eq!((dead.queue.as_str(), dead.attempt), ("billing", 1));
    assert!(dead.error.contains("the card was declined"), "{dead:?}");
    Ok(())
}

/// Queued: runs on the worker, and always fails; its own dead job is not announced.
#[on(AsyncJobDead, queue = "alerts", max_attempts = 1)]
async fn escalate(_: &AsyncJobDead, _: &mut AsyncJobDeadCtx<'_>) -> Result<(), BoxError> {
    Err("the pager is down too".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_death_is_announced_once_and_a_dead_handlers_own_death_is_not() {
    for db in Db::all().await {
        let name = db.name();
        let mut tx = db.pool.begin().await.unwrap();
        notify_async(&Charged, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let running = AsyncWorker::builder(db.pool.clone())
            .concurrency(2)
            .poll_interval(Duration::from_millis(20))
            .retry(RetryPolicy {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
            })
            .build()
            .await
            .unwrap()
            .start();
        // `capture` dies, is announced (`record_death` writes, `escalate` is queued), and
        // `escalate`'s job dies in turn.
        wait_for("both jobs dead", || async {
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'dead' AND announced_at IS NOT NULL")
                .await
                == 2
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await; // the leader's next rounds
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            db.count("SELECT COUNT(*) FROM effects").await,
            1,
            "{name}: announced once"
        );
        let announced_jobs = db
            .count("SELECT COUNT(*) FROM signals_jobs WHERE handler LIKE '%::escalate'")
            .await;
        assert_eq!(
            announced_jobs, 1,
            "{name}: escalate's death was not announced"
        );
        db.drop_schema().await;
    }
}
