//! The operator's API on PostgreSQL and SQLite through sqlx: every attempt kept on the job
//! (errors, worker, times), the counts by queue and handler in the operator's states, retry /
//! discard / cancel by id and over a filter in chunks (with dry runs that say the same), a
//! running job cancelled under its worker, a paused queue, and pruning.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, BoxError, Signal};
use signals_queue::{
    Action, AsyncJobScope, AsyncQueue, AsyncWorker, Discard, EnqueueAsync, FromJobAsync, JobFilter,
    JobStatus, RetryPolicy, Snooze, Tx,
};

mod support;
use support::{wait_for, Db};

#[derive(Default)]
struct Seen {
    /// Attempts of `flaky`.
    flaky: AtomicUsize,
    /// `slow` started.
    slow_started: AtomicBool,
    /// `slow`'s future was dropped before it finished.
    slow_dropped: AtomicBool,
}

struct Ctx<'a> {
    tx: Tx<'a>,
    seen: &'a Seen,
}

impl EnqueueAsync for Ctx<'_> {
    fn transaction(&mut self) -> Tx<'_> {
        self.tx.reborrow()
    }
}

impl<'c> FromJobAsync<'c> for Ctx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        let seen: &Arc<Seen> = job.state()?;
        Ok(Ctx {
            tx: job.transaction(),
            seen,
        })
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Flaky;

/// Fails twice, then succeeds.
#[on(Flaky, queue = "flaky", max_attempts = 5)]
async fn flaky(_: &Flaky, ctx: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    match ctx.seen.flaky.fetch_add(1, Ordering::SeqCst) {
        0 => Err(std::io::Error::other("provider said 503")),
        1 => Err(std::io::Error::other("provider timed out")),
        _ => Ok(()),
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Dies;

/// Always fails: dead after one attempt.
#[on(Dies, queue = "mail", max_attempts = 1)]
async fn dies(_: &Dies, _: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("mailbox gone"))
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Slow;

/// Runs until its future is dropped.
#[on(Slow, queue = "slow")]
async fn slow(_: &Slow, ctx: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    struct Dropped<'a>(&'a AtomicBool);
    impl Drop for Dropped<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _guard = Dropped(&ctx.seen.slow_dropped);
    ctx.seen.slow_started.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct RateLimited;

/// Snoozes twice (the provider said 429), then succeeds: no attempt is used up by a snooze.
#[on(RateLimited, queue = "limited", max_attempts = 1)]
async fn rate_limited(_: &RateLimited, ctx: &mut Ctx<'_>) -> Result<(), BoxError> {
    if ctx.seen.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err(Snooze::after(Duration::from_millis(50))
            .because("the provider said 429")
            .into());
    }
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct AccountGone;

/// Discards its job, through `anyhow` with context on top.
#[on(AccountGone, queue = "limited")]
async fn account_gone(_: &AccountGone, _: &mut Ctx<'_>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    Err(anyhow::Error::new(Discard::because(
        "the customer deleted their account",
    )))
    .context("sending the welcome email")
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct SignedUp;

/// Three days after the sign-up.
#[on(SignedUp, queue = "later", delay = "3d")]
async fn follow_up(_: &SignedUp, _: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    Ok(())
}

/// Soon after the sign-up.
#[on(SignedUp, queue = "soon", delay = "300ms")]
async fn welcome_soon(_: &SignedUp, ctx: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    ctx.seen.slow_started.store(true, Ordering::SeqCst);
    Ok(())
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Bulk {
    n: i64,
}

/// Never runs in these tests: its jobs are only acted on.
#[on(Bulk, queue = "bulk")]
async fn bulk(_: &Bulk, _: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    Ok(())
}

async fn notify<S>(db: &Db, seen: &Seen, signals: &[S])
where
    S: for<'c> Signal<Context<'c> = Ctx<'c>> + Sync,
{
    let mut tx = db.pool.begin().await.unwrap();
    for signal in signals {
        notify_async(signal, &mut Ctx { tx: tx.tx(), seen })
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn worker(db: &Db, seen: &Arc<Seen>) -> signals_queue::AsyncWorkerBuilder {
    AsyncWorker::builder(db.pool.clone())
        .state(Arc::clone(seen))
        .concurrency(4)
        .poll_interval(Duration::from_millis(50))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_kept_and_counted_by_queue_and_handler() {
    for db in Db::all().await {
        let name = db.name();
        let seen = Arc::new(Seen::default());
        notify(&db, &seen, &[Flaky]).await;
        notify(&db, &seen, &[Dies]).await;
        worker(&db, &seen)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let queue = AsyncQueue::new(db.pool.clone());

        let flaky = queue
            .jobs(&JobFilter::new().queue("flaky"), 0, 10)
            .await
            .unwrap();
        assert_eq!(flaky.len(), 1, "{name}");
        assert_eq!(flaky[0].state, JobStatus::Done, "{name}");
        let job = queue.job(flaky[0].id).await.unwrap().unwrap();
        let errors: Vec<Option<&str>> = job.attempts.iter().map(|a| a.error.as_deref()).collect();
        assert_eq!(
            errors,
            [Some("provider said 503"), Some("provider timed out"), None],
            "{name}: {job:?}"
        );
        let pid = format!(":{}", std::process::id());
        for attempt in &job.attempts {
            assert!(attempt.worker.as_deref().unwrap().ends_with(&pid), "{name}");
            assert!(attempt.started_at.unwrap() > 1_600_000_000_000, "{name}");
            assert!(attempt.duration_ms.unwrap() >= 0, "{name}");
        }
        assert_eq!(job.payload, "null", "{name}");

        let overview = queue.overview().await.unwrap();
        assert_eq!(overview.queues["flaky"].counts.done, 1, "{name}");
        assert_eq!(overview.queues["mail"].counts.dead, 1, "{name}");
        assert_eq!(overview.handlers["operate::dies"].dead, 1, "{name}");
        assert_eq!(overview.queues["mail"].oldest_due_ms, None, "{name}");

        // The dead job: discarded, then retried (it runs and dies again), then pruned.
        let dead = queue
            .jobs(&JobFilter::new().state(JobStatus::Dead), 0, 10)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("mailbox gone"),
            "{name}"
        );
        assert_eq!(
            queue
                .act_on(Action::Cancel, &[dead[0].id], false)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            queue
                .act_on(Action::Discard, &[dead[0].id], true)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            queue
                .act_on(Action::Discard, &[dead[0].id], false)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            queue.overview().await.unwrap().queues["mail"]
                .counts
                .discarded,
            1
        );
        assert_eq!(
            queue.retry_dead().await.unwrap(),
            0,
            "{name}: discarded is not dead"
        );
        assert_eq!(
            queue
                .act_on(Action::Retry, &[dead[0].id], false)
                .await
                .unwrap(),
            1
        );
        let pending = queue.overview().await.unwrap();
        assert_eq!(pending.queues["mail"].counts.pending, 1, "{name}");
        assert!(pending.queues["mail"].oldest_due_ms.is_some(), "{name}");
        worker(&db, &seen)
            .build()
            .await
            .unwrap()
            .run_until_idle()
            .await
            .unwrap();
        let job = queue.job(dead[0].id).await.unwrap().unwrap();
        assert_eq!(job.summary.state, JobStatus::Dead, "{name}");
        assert_eq!(
            job.attempts.len(),
            2,
            "{name}: the history survives a retry"
        );
        assert_eq!(
            queue.purge_finished(Duration::ZERO).await.unwrap(),
            1,
            "{name}"
        );
        assert!(queue.job(dead[0].id).await.unwrap().is_none(), "{name}");
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_over_a_filter_run_in_chunks_and_dry_runs_say_the_same() {
    for db in Db::all().await {
        let name = db.name();
        let seen = Arc::new(Seen::default());
        let signals: Vec<Bulk> = (0..2_500).map(|n| Bulk { n }).collect();
        notify(&db, &seen, &signals).await;
        let queue = AsyncQueue::new(db.pool.clone());
        let waiting = JobFilter::new().state(JobStatus::Pending).queue("bulk");
        assert_eq!(
            queue
                .act_on_all(Action::Discard, &waiting, true)
                .await
                .unwrap(),
            2_500,
            "{name}"
        );
        assert_eq!(
            queue.overview().await.unwrap().queues["bulk"]
                .counts
                .pending,
            2_500
        );
        // Retry applies to none of them (they are due already).
        assert_eq!(
            queue
                .act_on_all(Action::Retry, &waiting, false)
                .await
                .unwrap(),
            0,
            "{name}"
        );
        assert_eq!(
            queue
                .act_on_all(Action::Discard, &waiting, false)
                .await
                .unwrap(),
            2_500,
            "{name}"
        );
        let counts = queue.overview().await.unwrap().queues["bulk"]
            .counts
            .clone();
        assert_eq!((counts.pending, counts.discarded), (0, 2_500), "{name}");
        let discarded = JobFilter::new().state(JobStatus::Discarded);
        assert_eq!(
            queue
                .act_on_all(Action::Retry, &discarded, true)
                .await
                .unwrap(),
            2_500,
            "{name}"
        );
        let page = queue.jobs(&discarded, 0, 100).await.unwrap();
        let next = queue.jobs(&discarded, page[99].id, 100).await.unwrap();
        assert_eq!((page.len(), next.len()), (100, 100), "{name}");
        assert!(next[0].id > page[99].id, "{name}: pages follow each other");
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_is_dropped_by_its_worker_within_a_second() {
    for db in Db::all().await {
        let name = db.name();
        let seen = Arc::new(Seen::default());
        notify(&db, &seen, &[Slow]).await;
        let running = worker(&db, &seen).build().await.unwrap().start();
        wait_for("the slow job to start", || async {
            seen.slow_started.load(Ordering::SeqCst)
        })
        .await;
        let queue = AsyncQueue::new(db.pool.clone());
        let slow = queue
            .jobs(&JobFilter::new().state(JobStatus::Running), 0, 10)
            .await
            .unwrap();
        assert_eq!(slow.len(), 1, "{name}");
        let cancelled_at = Instant::now();
        assert_eq!(
            queue
                .act_on(Action::Cancel, &[slow[0].id], false)
                .await
                .unwrap(),
            1
        );
        wait_for("the worker to drop the cancelled job", || async {
            seen.slow_dropped.load(Ordering::SeqCst)
        })
        .await;
        let took = cancelled_at.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{name}: dropped after {took:?}"
        );
        let job = queue.job(slow[0].id).await.unwrap().unwrap();
        assert_eq!(job.summary.state, JobStatus::Cancelled, "{name}");
        // The worker goes on: a new job runs, and shutdown has nothing left to wait for.
        notify(&db, &seen, &[Flaky]).await;
        running.wait_idle().await.unwrap();
        let stats = running.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(stats.failed, 2, "{name}: only flaky's two failures");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM signals_jobs WHERE state = 'running'")
                .await,
            0,
            "{name}"
        );
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_is_not_claimed_until_resumed() {
    for db in Db::all().await {
        let name = db.name();
        let seen = Arc::new(Seen::default());
        let queue = AsyncQueue::new(db.pool.clone());
        queue.pause("flaky").await.unwrap();
        let running = worker(&db, &seen).build().await.unwrap().start();
        notify(&db, &seen, &[Flaky]).await;
        notify(&db, &seen, &[Dies]).await;
        // The other queue runs; the paused one waits, and does not keep the worker busy.
        running.wait_idle().await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(seen.flaky.load(Ordering::SeqCst), 0, "{name}");
        let overview = queue.overview().await.unwrap();
        assert!(overview.queues["flaky"].paused, "{name}");
        assert_eq!(overview.queues["flaky"].counts.pending, 1, "{name}");
        assert_eq!(overview.queues["mail"].counts.dead, 1, "{name}");
        queue.resume("flaky").await.unwrap();
        wait_for("the resumed queue's job", || async {
            seen.flaky.load(Ordering::SeqCst) == 3
        })
        .await;
        running.wait_idle().await.unwrap();
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        assert!(
            !queue.overview().await.unwrap().queues["flaky"].paused,
            "{name}"
        );
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_can_snooze_without_using_an_attempt_or_discard_its_job() {
    for db in Db::all().await {
        let name = db.name();
        let seen = Arc::new(Seen::default());
        notify(&db, &seen, &[RateLimited]).await;
        notify(&db, &seen, &[AccountGone]).await;
        let running = worker(&db, &seen).build().await.unwrap().start();
        running.wait_idle().await.unwrap();
        let stats = running.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (stats.snoozed, stats.discarded, stats.failed),
            (2, 1, 0),
            "{name}"
        );
        let queue = AsyncQueue::new(db.pool.clone());
        let jobs = queue
            .jobs(&JobFilter::new().queue("limited"), 0, 10)
            .await
            .unwrap();
        let limited = &jobs[0];
        assert_eq!(
            limited.state,
            JobStatus::Done,
            "{name}: 3 runs on max_attempts 1"
        );
        assert_eq!(limited.attempt, 1, "{name}");
        let history = queue.job(limited.id).await.unwrap().unwrap().attempts;
        assert_eq!(history.len(), 3, "{name}");
        assert!(
            history[0].error.as_deref().unwrap().contains("429"),
            "{name}"
        );
        let gone = &jobs[1];
        assert_eq!(gone.state, JobStatus::Discarded, "{name}");
        let error = gone.last_error.as_deref().unwrap();
        assert!(
            error.contains("sending the welcome email"),
            "{name}: {error}"
        );
        let overview = queue.overview().await.unwrap();
        assert_eq!(overview.queues["limited"].counts.discarded, 1, "{name}");
        assert_eq!(overview.queues["limited"].counts.dead, 0, "{name}");
        db.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_waits_out_its_delay_and_keeps_no_worker_busy() {
    for db in Db::all().await {
        let name = db.name();
        let seen = Arc::new(Seen::default());
        let written = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        notify(&db, &seen, &[SignedUp]).await;
        let queue = AsyncQueue::new(db.pool.clone());
        let overview = queue.overview().await.unwrap();
        assert_eq!(overview.queues["later"].counts.scheduled, 1, "{name}");
        assert_eq!(overview.queues["soon"].counts.scheduled, 1, "{name}");
        let later = queue
            .jobs(&JobFilter::new().queue("later"), 0, 1)
            .await
            .unwrap();
        let three_days = 3 * 86_400_000;
        let off = later[0].due_at - (written + three_days);
        assert!(off.abs() < 60_000, "{name}: due {off} ms off three days");

        // Not yet due, neither keeps a worker busy; the soon one runs once due, and the worker
        // is idle again though a job waits three days.
        let running = worker(&db, &seen).build().await.unwrap().start();
        running.wait_idle().await.unwrap();
        assert!(
            !seen.slow_started.load(Ordering::SeqCst),
            "{name}: ran early"
        );
        wait_for("the 300 ms job", || async {
            seen.slow_started.load(Ordering::SeqCst)
        })
        .await;
        running.wait_idle().await.unwrap();
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        let counts = queue.overview().await.unwrap().queues["later"]
            .counts
            .clone();
        assert_eq!((counts.scheduled, counts.done), (1, 0), "{name}");
        db.drop_schema().await;
    }
}
