//! The queue's metrics through the `metrics` facade, on both databases: a recorder installed
//! for this test binary sees each job started and succeeded (batched or in its own
//! transaction), a failure that is retried, one that is dead, a discard and a snooze, each under
//! its handler and queue, with the run time and lag histograms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{with_db, AsyncWorker, Discard, RetryPolicy, Snooze};

mod support;
use support::{Ctx, Db};

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Paid;

/// Completed by the completer, with others.
#[on(Paid, queue = "mail")]
async fn receipt(_: &Paid, _: &mut Ctx<'_>) {}

/// Completed in its own transaction.
#[on(Paid, queue = "ledger")]
async fn book(_: &Paid, ctx: &mut Ctx<'_>) -> Result<(), sqlx::Error> {
    with_db!(&mut ctx.tx, |conn| sqlx::query(
        "INSERT INTO effects (n) VALUES (1)"
    )
    .execute(conn)
    .await
    .map(drop))
}

static FLAKY: AtomicUsize = AtomicUsize::new(0);

/// Fails its first attempt, then succeeds.
#[on(Paid, queue = "mail")]
async fn flaky(_: &Paid, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    match FLAKY.fetch_add(1, Ordering::SeqCst) % 2 {
        0 => Err("the provider timed out".into()),
        _ => Ok(()),
    }
}

/// Always fails, with one attempt: dead.
#[on(Paid, queue = "mail", max_attempts = 1)]
async fn doomed(_: &Paid, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    Err("never works".into())
}

/// Discards its job.
#[on(Paid, queue = "mail")]
async fn unwanted(_: &Paid, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    Err(Discard::because("the customer left").into())
}

static SNOOZED: AtomicUsize = AtomicUsize::new(0);

/// Snoozes once, then succeeds.
#[on(Paid, queue = "mail")]
async fn later(_: &Paid, _: &mut Ctx<'_>) -> Result<(), BoxError> {
    match SNOOZED.fetch_add(1, Ordering::SeqCst) % 2 {
        0 => Err(Snooze::after(Duration::from_millis(1)).into()),
        _ => Ok(()),
    }
}

/// One snapshot's series: (kind, name, handler label, queue label, value).
struct Seen(Vec<(MetricKind, String, String, String, DebugValue)>);

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Seen {
        let label = |key: &metrics::Key, name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_string())
                .unwrap_or_default()
        };
        Seen(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let handler = label(key.key(), "handler");
                    let queue = label(key.key(), "queue");
                    (
                        key.kind(),
                        key.key().name().to_string(),
                        handler,
                        queue,
                        value,
                    )
                })
                .collect(),
        )
    }

    /// The counter `name` of the handler whose job name ends with `::handler`, and its queue.
    fn count(&self, name: &str, handler: &str) -> (u64, String) {
        let suffix = format!("::{handler}");
        let mut found = (0, String::new());
        for (kind, series, of, queue, value) in &self.0 {
            if *kind == MetricKind::Counter && series == name && of.ends_with(&suffix) {
                if let DebugValue::Counter(n) = value {
                    found = (found.0 + n, queue.clone());
                }
            }
        }
        found
    }

    /// How many values the histogram `name` of that handler took.
    fn observed(&self, name: &str, handler: &str) -> usize {
        let suffix = format!("::{handler}");
        self.0
            .iter()
            .filter(|(kind, series, of, _, _)| {
                *kind == MetricKind::Histogram && series == name && of.ends_with(&suffix)
            })
            .map(|(_, _, _, _, value)| match value {
                DebugValue::Histogram(values) => values.len(),
                _ => 0,
            })
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_counts_every_outcome_by_handler_and_queue() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    for db in Db::all().await {
        let name = db.name();
        let before = Seen::take(&snapshotter);
        let mut tx = db.pool.begin().await.unwrap();
        notify_async(&Paid, &mut Ctx { tx: tx.tx() }).await.unwrap();
        tx.commit().await.unwrap();
        AsyncWorker::builder(db.pool.clone())
            .concurrency(4)
            .poll_interval(Duration::from_millis(20))
            .retry(RetryPolicy {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
            })
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let after = Seen::take(&snapshotter);
        // What this database's run added (the counters are the process's, cumulative).
        let added = |series: &str, handler: &str| {
            let (now, queue) = after.count(series, handler);
            (now - before.count(series, handler).0, queue)
        };
        let mail = || "mail".to_string();
        assert_eq!(
            added("signals_jobs_succeeded_total", "receipt"),
            (1, mail()),
            "{name}"
        );
        assert_eq!(
            added("signals_jobs_succeeded_total", "book"),
            (1, "ledger".to_string()),
            "{name}: completed in its own transaction"
        );
        assert_eq!(
            added("signals_jobs_started_total", "flaky"),
            (2, mail()),
            "{name}"
        );
        assert_eq!(added("signals_jobs_failed_total", "flaky").0, 1, "{name}");
        assert_eq!(added("signals_jobs_retried_total", "flaky").0, 1, "{name}");
        assert_eq!(
            added("signals_jobs_succeeded_total", "flaky").0,
            1,
            "{name}"
        );
        assert_eq!(added("signals_jobs_dead_total", "flaky").0, 0, "{name}");
        assert_eq!(added("signals_jobs_dead_total", "doomed").0, 1, "{name}");
        assert_eq!(added("signals_jobs_retried_total", "doomed").0, 0, "{name}");
        assert_eq!(
            added("signals_jobs_succeeded_total", "doomed").0,
            0,
            "{name}"
        );
        assert_eq!(
            added("signals_jobs_discarded_total", "unwanted").0,
            1,
            "{name}"
        );
        assert_eq!(
            added("signals_jobs_failed_total", "unwanted").0,
            0,
            "{name}"
        );
        assert_eq!(added("signals_jobs_snoozed_total", "later").0, 1, "{name}");
        assert_eq!(added("signals_jobs_started_total", "later").0, 2, "{name}");
        assert_eq!(
            added("signals_jobs_succeeded_total", "later").0,
            1,
            "{name}"
        );
        assert!(
            after.observed("signals_job_run_seconds", "book") >= 1,
            "{name}"
        );
        assert!(
            after.observed("signals_job_lag_seconds", "book") >= 1,
            "{name}"
        );
        leader_gauges(&db, &snapshotter).await;
        db.drop_schema().await;
    }
}

/// The gauge `name` whose labels include every one of `labels`, in `snapshot`.
fn gauge(snapshot: &[GaugeValue], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshot
        .iter()
        .find(|(series, of, _)| {
            series == name
                && labels
                    .iter()
                    .all(|(k, v)| of.iter().any(|(key, value)| key == k && value.ends_with(v)))
        })
        .map(|(_, _, value)| *value)
}

/// A gauge as one snapshot saw it: (name, labels, value).
type GaugeValue = (String, Vec<(String, String)>, f64);

/// The gauges of one snapshot (a snapshot of the debugging recorder resets them to zero: read
/// everything from one).
fn gauges(snapshotter: &Snapshotter) -> Vec<GaugeValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Gauge(value) => Some((
                key.key().name().to_string(),
                key.key()
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
                value.into_inner(),
            )),
            _ => None,
        })
        .collect()
}

/// The leader publishes jobs by queue, handler and state (done: the kept counts) and each
/// queue's oldest due job's age.
async fn leader_gauges(db: &Db, snapshotter: &Snapshotter) {
    let name = db.name();
    let queue = signals_queue::AsyncQueue::new(db.pool.clone());
    queue.pause("mail").await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    notify_async(&Paid, &mut Ctx { tx: tx.tx() }).await.unwrap();
    tx.commit().await.unwrap();
    let running = AsyncWorker::builder(db.pool.clone())
        .build()
        .await
        .unwrap()
        .start();
    let waiting = [
        ("queue", "mail"),
        ("handler", "::receipt"),
        ("state", "pending"),
    ];
    let booked = [
        ("queue", "ledger"),
        ("handler", "::book"),
        ("state", "done"),
    ];
    // A snapshot zeroes the gauges it reads, and the leader sets them one by one: keep the
    // last non-zero value each gauge showed while waiting.
    let seen = std::sync::Mutex::new(Vec::<GaugeValue>::new());
    support::wait_for("the leader's gauges", || async {
        let mut kept = seen.lock().unwrap();
        for (series, labels, value) in gauges(snapshotter) {
            if value != 0.0 {
                kept.retain(|(s, l, _)| !(*s == series && *l == labels));
                kept.push((series, labels, value));
            }
        }
        gauge(&kept, "signals_jobs", &waiting) == Some(1.0)
    })
    .await;
    let snapshot = seen.into_inner().unwrap();
    let done = gauge(&snapshot, "signals_jobs", &booked);
    assert!(
        done.is_some_and(|done| done >= 1.0),
        "{name}: the kept done counts: {done:?}"
    );
    let oldest = gauge(
        &snapshot,
        "signals_oldest_due_job_age_seconds",
        &[("queue", "mail")],
    );
    assert!(oldest.is_some_and(|age| age >= 0.0), "{name}: {oldest:?}");
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    queue.resume("mail").await.unwrap();
}
