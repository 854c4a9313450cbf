//! Retention, on both databases: the fleet's leader deletes done jobs older than a day and
//! dead ones older than fourteen days (the defaults), in batches of 10,000 rows, keeps the
//! done counts exact, and keeps each periodic signal's latest tick; younger rows stay.
//! (`bench/benches/retention.rs` times it on a million rows.)

use std::time::Duration;

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{AsyncQueue, AsyncWorker, Retention};

mod support;
use support::{wait_for, Ctx, Db};

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Shipped {
    fail: bool,
}

#[on(Shipped, queue = "mail", max_attempts = 1)]
async fn notify_customer(sig: &Shipped, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    match sig.fail {
        true => Err("the customer's address bounced".into()),
        false => Ok(()),
    }
}

const DAY: i64 = 24 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_prunes_old_finished_jobs_in_batches_and_keeps_the_done_counts_exact() {
    for db in Db::all().await {
        let name = db.name();
        // 12,500 done jobs (two batches and a short one) and 40 dead ones.
        let mut tx = db.pool.begin().await.unwrap();
        for i in 0..12_540 {
            let signal = Shipped { fail: i >= 12_500 };
            notify_async(&signal, &mut Ctx { tx: tx.tx() })
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let keep_all = AsyncWorker::builder(db.pool.clone())
            .concurrency(50)
            .retention(Retention::keep_all())
            .build()
            .await
            .unwrap();
        keep_all.run_until_idle().await.unwrap();
        // Age 12,000 done jobs by two days, and 30 dead ones by fifteen.
        let mut tx = db.pool.begin().await.unwrap();
        for sql in [
            format!(
                "UPDATE signals_jobs SET finished_at = finished_at - {} \
                 WHERE state = 'done' AND id IN (SELECT id FROM signals_jobs WHERE state = 'done' ORDER BY id LIMIT 12000)",
                2 * DAY
            ),
            format!(
                "UPDATE signals_jobs SET finished_at = finished_at - {} \
                 WHERE state = 'dead' AND id IN (SELECT id FROM signals_jobs WHERE state = 'dead' ORDER BY id LIMIT 30)",
                15 * DAY
            ),
            // Ticks of a periodic signal, all older than a day: only the latest stays.
            "INSERT INTO signals_ticks (signal, tick_at, fired_at) VALUES \
             ('app::Nightly', 1000, 1000), ('app::Nightly', 2000, 2000), ('app::Nightly', 3000, 3000)"
                .to_owned(),
        ] {
            signals_queue::with_db!(&mut tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(conn)
                .await
                .map(drop)
                .unwrap());
        }
        tx.commit().await.unwrap();
        let queue = AsyncQueue::new(db.pool.clone());
        let done_before = queue
            .stats()
            .await
            .unwrap()
            .handlers
            .values()
            .map(|h| h.done)
            .sum::<u64>();
        assert_eq!(done_before, 12_500, "{name}");
        let running = AsyncWorker::builder(db.pool.clone())
            .build()
            .await
            .unwrap()
            .start();
        wait_for("the leader's first round", || async {
            db.count("SELECT COUNT(*) FROM signals_ticks").await == 1
        })
        .await;
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        let done = db
            .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'done'")
            .await;
        let dead = db
            .count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'dead'")
            .await;
        assert_eq!((done, dead), (500, 10), "{name}: younger rows stay");
        let counted = queue
            .stats()
            .await
            .unwrap()
            .handlers
            .values()
            .map(|h| h.done)
            .sum::<u64>();
        assert_eq!(counted, 500, "{name}: the done counts follow the deletes");
        let latest = db.count("SELECT MAX(tick_at) FROM signals_ticks").await;
        assert_eq!(latest, 3000, "{name}: each signal's latest tick stays");
        db.drop_schema().await;
    }
}
