//! The fleet's leader on the async worker: every worker renews or contends for the leadership
//! every second, on a loop of its own; the leader fires the asynchronous periodic signals
//! linked into its program on another, so a long tick never holds up the renewal, and prunes
//! finished jobs on a third, a batch at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::{Clock, Millis};
use crate::db::Pool;
use crate::dead;
use crate::leader::{Leadership, Prune, Pruner, GAUGES_EVERY, LEADER_LEASE, LEADER_RENEW};
use crate::meter::Gauges;
use crate::periodic::AsyncFire;
use crate::schedule::Ticker;
use crate::scope::{AsyncJobScope, State};
use crate::store;
use crate::trace;

/// What [`lead`] needs.
pub struct Leading<'a> {
    /// The worker's own connections: the renewals.
    pub own: &'a Pool,
    /// The application's pool: a tick's transaction, as a job's.
    pub pool: &'a Pool,
    /// The worker's id.
    pub worker: i64,
    /// What a tick's context is built from.
    pub state: &'a State,
    /// A manual clock, in tests.
    pub clock: &'a Clock,
    /// Whether this worker leads.
    pub leadership: &'a Leadership,
    /// The asynchronous periodic signals linked into this program, in the ticker's order.
    pub fires: &'a [AsyncFire],
    /// Set (and `stopped` notified) when the worker shuts down: the leader resigns.
    pub stop: &'a AtomicBool,
    /// See `stop`.
    pub stopped: &'a Notify,
    /// Notified when this worker becomes the leader: it fires at once.
    pub elected: &'a Notify,
    /// How long finished jobs are kept.
    pub retention: crate::timing::Retention,
}

/// Contends for the leadership and, while leading, fires due ticks, until the worker stops;
/// then resigns, so that another worker leads at once.
pub async fn lead(leading: Leading<'_>, mut ticker: Ticker) {
    let mut pruner = Pruner::new(leading.retention);
    let work = async {
        tokio::join!(
            renew(&leading),
            fire(&leading, &mut ticker),
            prune(&leading, &mut pruner),
            gauges(&leading),
            announce(&leading)
        )
    };
    // At shutdown, work under way is dropped: a tick's or an announcement's transaction rolls
    // back (the next leader does it again), and a database that is gone holds nothing up.
    tokio::select! {
        _ = work => {}
        () = stopped(&leading) => {}
    }
    if leading.leadership.lost() {
        trace::leadership(leading.worker, false);
    }
    let resign = async {
        let mut conn = leading.own.acquire().await?;
        store::resign(conn.tx(), leading.worker).await
    };
    let _ = tokio::time::timeout(LEADER_RENEW, resign).await;
}

/// Returns once the worker stops.
async fn stopped(leading: &Leading<'_>) {
    loop {
        let stopped = leading.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if leading.stop.load(Ordering::SeqCst) {
            return;
        }
        stopped.await;
    }
}

/// Sleeps `pause`, or until the worker stops (or, with `elected`, this worker becomes the
/// leader); whether it still runs.
async fn pause(leading: &Leading<'_>, pause: Duration, elected: Option<&Notify>) -> bool {
    let stopped = leading.stopped.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    if leading.stop.load(Ordering::SeqCst) {
        return false;
    }
    let elected = async {
        match elected {
            Some(elected) => elected.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = &mut stopped => {}
        () = elected => {}
    }
    !leading.stop.load(Ordering::SeqCst)
}

/// Takes or renews the leadership every [`LEADER_RENEW`].
async fn renew(leading: &Leading<'_>) {
    loop {
        let sent = Instant::now();
        let elect = async {
            let mut conn = leading.own.acquire().await?;
            store::elect(
                conn.tx(),
                leading.worker,
                LEADER_LEASE,
                leading.clock.fixed(),
            )
            .await
        };
        match tokio::time::timeout(LEADER_RENEW, elect).await {
            Ok(Ok(Some(now))) => {
                if leading.leadership.held(sent, LEADER_LEASE, now) {
                    trace::leadership(leading.worker, true);
                    leading.elected.notify_waiters();
                }
            }
            Ok(Ok(None)) => {
                if leading.leadership.lost() {
                    trace::leadership(leading.worker, false);
                }
            }
            // Unanswered: the leadership runs out by itself at the end of the lease.
            Ok(Err(error)) => trace::database_error("leader", &error.into()),
            Err(_) => {}
        }
        if !pause(leading, LEADER_RENEW, None).await {
            return;
        }
    }
}

/// While this worker leads, fires each due tick; sleeps until the next one (a second at most).
async fn fire(leading: &Leading<'_>, ticker: &mut Ticker) {
    if leading.fires.is_empty() {
        return;
    }
    let mut term = leading.leadership.term();
    loop {
        let now = match leading.leadership.is_leader() {
            true => leading.clock.fixed().or_else(|| leading.leadership.now()),
            false => None,
        };
        let wait = match now {
            Some(now) => {
                if leading.leadership.term() != term {
                    term = leading.leadership.term();
                    ticker.forget(); // another worker may have led meanwhile
                }
                fire_due(leading, ticker, now).await;
                ticker.wait(now, LEADER_RENEW)
            }
            None => LEADER_RENEW,
        };
        if !pause(
            leading,
            wait.max(Duration::from_millis(1)),
            Some(leading.elected),
        )
        .await
        {
            return;
        }
    }
}

/// While this worker leads, deletes finished jobs and old ticks a batch (10,000 rows) at a
/// time, a round every minute; a leader that lost the lease stops between two batches.
async fn prune(leading: &Leading<'_>, pruner: &mut Pruner) {
    loop {
        let now = match leading.leadership.is_leader() {
            true => leading.clock.fixed().or_else(|| leading.leadership.now()),
            false => None,
        };
        let wait = match now.and_then(|now| pruner.next(now)) {
            Some(prune) => {
                let started = Instant::now();
                let batch = async {
                    let mut conn = leading.pool.acquire().await?;
                    match prune {
                        Prune::Done(before) => store::purge_done_batch(conn.tx(), before).await,
                        Prune::Dead(before) => store::purge_finished_batch(conn.tx(), before).await,
                        Prune::Ticks(before) => store::prune_ticks_batch(conn.tx(), before).await,
                    }
                };
                let batch = batch.await;
                crate::outcome::pruned(pruner, batch, started.elapsed());
                pruner.wait()
            }
            None if now.is_some() => pruner.wait().min(LEADER_RENEW),
            None => LEADER_RENEW,
        };
        if !pause(leading, wait.max(Duration::from_millis(1)), None).await {
            return;
        }
    }
}

/// While this worker leads, publishes the gauges of jobs by state every [`GAUGES_EVERY`]; once
/// it no longer leads, zeroes them.
async fn gauges(leading: &Leading<'_>) {
    let mut gauges = Gauges::default();
    let mut published: Option<Instant> = None;
    loop {
        match leading.leadership.is_leader() {
            true if published.is_some_and(|at| at.elapsed() < GAUGES_EVERY) => {}
            true => {
                published = Some(Instant::now());
                let now = leading.clock.fixed();
                let overview = async {
                    let mut conn = leading.own.acquire().await?;
                    store::overview(conn.tx(), now).await
                };
                match overview.await {
                    Ok(rows) => {
                        let now = now.or_else(|| leading.leadership.now());
                        gauges.publish(&rows, now.unwrap_or_else(|| leading.clock.now()));
                    }
                    Err(error) => trace::database_error("gauges", &error.into()),
                }
            }
            // Checked every second: a leader that lost the lease zeroes its gauges at once.
            false => {
                gauges.clear();
                published = None;
            }
        }
        if !pause(leading, LEADER_RENEW, Some(leading.elected)).await {
            gauges.clear();
            return;
        }
    }
}

/// While this worker leads, announces the jobs that went dead (`AsyncJobDead`), every second.
async fn announce(leading: &Leading<'_>) {
    loop {
        if leading.leadership.is_leader() {
            let deaths = async {
                let mut conn = leading.own.acquire().await?;
                store::unannounced(conn.tx()).await
            };
            match deaths.await {
                Ok(rows) if rows.is_empty() => {}
                Ok(rows) => {
                    if let Err(error) =
                        dead::announce_async(leading.pool, rows, leading.state).await
                    {
                        trace::announce_failed(&*error);
                    }
                }
                Err(error) => trace::database_error("announce", &error.into()),
            }
        }
        if !pause(leading, LEADER_RENEW, Some(leading.elected)).await {
            return;
        }
    }
}

/// Fires the due tick of each periodic signal, one transaction each.
async fn fire_due(leading: &Leading<'_>, ticker: &mut Ticker, now: Millis) {
    for index in ticker.looking(now) {
        if !leading.leadership.is_leader() || leading.stop.load(Ordering::SeqCst) {
            return; // a leader that lost the lease stops at once
        }
        let signal = ticker.path(index);
        if ticker.needs_last(index) {
            let last = async {
                let mut conn = leading.own.acquire().await?;
                store::last_tick(conn.tx(), signal).await
            };
            match last.await {
                Ok(last) => ticker.set_last(index, last),
                Err(error) => {
                    trace::database_error("leader", &error.into());
                    continue;
                }
            }
        }
        let Some(tick) = ticker.due(index, now) else {
            continue;
        };
        match fire_one(leading, leading.fires[index], signal, tick).await {
            Ok(fired) => {
                if fired {
                    trace::ticked(signal, tick);
                }
                ticker.fired(index, tick);
            }
            Err(error) => trace::tick_failed(signal, tick, &*error),
        }
    }
}

/// Records the tick and, if no other worker did, notifies the signal in the same transaction;
/// whether this worker fired it.
async fn fire_one(
    leading: &Leading<'_>,
    fire: AsyncFire,
    signal: &str,
    tick: Millis,
) -> Result<bool, signals_core::BoxError> {
    let mut tx = leading.pool.begin().await?;
    let now = leading.clock.fixed();
    if !store::record_tick(tx.tx(), signal, tick, leading.worker, now).await? {
        return Ok(false); // dropped: rolled back
    }
    let scope = AsyncJobScope {
        tx: tx.tx(),
        state: leading.state,
        job_id: 0,
        event_id: uuid::Uuid::now_v7(),
        attempt: 1,
    };
    fire(tick, scope).await?;
    tx.commit().await?;
    Ok(true)
}
