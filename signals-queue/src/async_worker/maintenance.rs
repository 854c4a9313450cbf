//! Maintenance: renews a worker's lease (one row) on a loop of its own, so that no other work
//! delays it; and, on another, rescues the jobs of workers whose lease lapsed, makes its
//! handlers' scheduled jobs available once due (PostgreSQL), spots due suspects, and records
//! the jobs of its own that nothing holds any more (orphans); until the worker retires. The
//! relay of `signals-broker` runs it too: it follows the same life cycle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::db::Pool;
use crate::lifecycle::{self, InFlight, LeaseClock, StaleWatch};
use crate::store;
use crate::timing::RetryPolicy;
use crate::trace;

/// What [`maintain`] keeps up, and for whom.
pub struct Upkeep<'a> {
    /// The worker's own connections.
    pub pool: &'a Pool,
    /// The worker's id.
    pub worker: i64,
    /// Its lease: renewed every third of it.
    pub lease: Duration,
    /// How often to look for dead workers, due scheduled jobs and due suspects (at most a
    /// third of the lease): a retry's backoff may run over by up to this.
    pub tick: Duration,
    /// The backoff a rescued job waits out.
    pub retry: &'a RetryPolicy,
    /// The worker's handlers as the statements take them (for due scheduled jobs and suspects).
    pub handlers: &'a str,
    /// A manual clock, in tests.
    pub clock: &'a Clock,
    /// Woken when jobs were rescued or a suspect is due.
    pub woken: &'a Notify,
    /// Set while the claimer holds the reservation of a due suspect of these handlers (one
    /// claimer drains for it); `None`: no suspect is reserved.
    pub suspects: Option<&'a AtomicBool>,
    /// How many jobs the claimer runs now: an idle one reserves a due suspect first. `None`:
    /// always idle (a relay, which runs suspects beside others).
    pub running: Option<&'a std::sync::atomic::AtomicUsize>,
    /// The jobs the worker holds; `None`: no orphans are looked for.
    pub in_flight: Option<&'a InFlight>,
    /// An orphan written longer ago than this is dead when it is failed (a relay's `max_age`);
    /// `None`: its attempts decide.
    pub max_age: Option<Duration>,
    /// When the lease was last renewed: the claimer stops claiming once it may have lapsed.
    pub renewed: &'a LeaseClock,
    /// Set (and `retired` notified) once nothing of the worker runs any more.
    pub retire: &'a AtomicBool,
    /// See `retire`.
    pub retired: &'a Notify,
    /// The handlers the claimer claims for, less those of paused queues: maintenance reads the
    /// paused queues every tick. `None`: nothing is paused (a relay).
    pub claimable: Option<&'a crate::registry::Claimable>,
    /// Drops the jobs of `in_flight` an operator cancelled; woken early by `Cancelled`'s
    /// notification (PostgreSQL), else found every tick. `None`: no cancellation is looked for.
    pub cancel: Option<Cancel<'a>>,
    /// The publishing functions linked into this program, as the statements take them: once a
    /// lease, maintenance warns when their messages have waited longer than two leases (no
    /// relay is running, or it is far behind). `None`: not looked at (a relay).
    pub outbox: Option<&'a str>,
}

/// How maintenance learns of cancelled jobs and drops them.
#[derive(Clone, Copy)]
pub struct Cancel<'a> {
    /// Notified when an operator cancelled jobs (PostgreSQL's notification): look at once.
    pub hint: &'a Notify,
    /// Drops the running jobs of these ids (their claims were revoked).
    pub drop: &'a (dyn Fn(&[i64]) + Send + Sync),
}

/// Renews the lease every third of it, and rescues, promotes, spots suspects and records
/// orphans every `tick`, until `retire`; then forgets the worker's lease row.
pub async fn maintain(upkeep: Upkeep<'_>) {
    tokio::join!(renew(&upkeep), look_after(&upkeep));
    // Bounded: with the database gone, the lease lapses by itself.
    let retire = async {
        let mut conn = upkeep.pool.acquire().await?;
        store::retire(conn.tx(), upkeep.worker, upkeep.clock.fixed()).await
    };
    let _ = tokio::time::timeout(upkeep.lease / 3, retire).await;
}

/// Sleeps `pause`, or until the worker retires (or, with `cancel`, an operator cancelled
/// jobs); whether it is still running.
async fn pause(upkeep: &Upkeep<'_>, pause: Duration, cancel: Option<Cancel<'_>>) -> bool {
    let retired = upkeep.retired.notified();
    tokio::pin!(retired);
    retired.as_mut().enable();
    if upkeep.retire.load(Ordering::SeqCst) {
        return false;
    }
    let hinted = async {
        match cancel {
            Some(cancel) => cancel.hint.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = &mut retired => {}
        () = hinted => {}
    }
    !upkeep.retire.load(Ordering::SeqCst)
}

/// The heartbeat, on a loop of its own: nothing else maintenance does can hold it up. A
/// failed renewal is tried again soon.
async fn renew(upkeep: &Upkeep<'_>) {
    let (every, _) = lifecycle::maintenance_ticks(upkeep.lease, upkeep.tick);
    loop {
        // The lease runs from before the statement was sent: the server's clock read it later.
        let sent = Instant::now();
        let renewed = async {
            let mut conn = upkeep.pool.acquire().await?;
            store::heartbeat(conn.tx(), upkeep.worker, upkeep.lease, upkeep.clock.fixed()).await
        };
        let next = match tokio::time::timeout(every, renewed).await {
            Ok(Ok(())) => {
                upkeep.renewed.renewed_at(sent);
                every
            }
            Ok(Err(error)) => {
                trace::database_error("heartbeat", &error.into());
                (every / 4).max(Duration::from_millis(5))
            }
            Err(_) => Duration::ZERO, // the statement took a third of the lease: again at once
        };
        if !pause(upkeep, next, None).await {
            return;
        }
    }
}

/// Rescues, promotes, spots suspects and records orphans every tick.
async fn look_after(upkeep: &Upkeep<'_>) {
    let (_, tick) = lifecycle::maintenance_ticks(upkeep.lease, upkeep.tick);
    let mut watch = StaleWatch::default();
    // When the workers that running jobs name were last checked for a row (PostgreSQL), and
    // the outbox looked at.
    let mut adopted: Option<Instant> = None;
    let mut outbox_seen: Option<Instant> = None;
    loop {
        let adopt = adopted.is_none_or(|at| at.elapsed() >= upkeep.lease);
        if upkeep.outbox.is_some() && outbox_seen.is_none_or(|at| at.elapsed() >= upkeep.lease) {
            outbox_seen = Some(Instant::now());
            if let Err(error) = look_at_outbox(upkeep).await {
                trace::database_error("outbox", &error.into());
            }
        }
        // A round waiting for a database that is gone does not hold up retirement.
        let retired = upkeep.retired.notified();
        tokio::pin!(retired);
        retired.as_mut().enable();
        if upkeep.retire.load(Ordering::SeqCst) {
            return;
        }
        let round = tokio::select! {
            round = tick_once(upkeep, &mut watch, adopt) => round,
            () = &mut retired => return,
        };
        match round {
            Ok(()) if adopt => adopted = Some(Instant::now()),
            Ok(()) => {}
            Err(error) => trace::database_error("rescue", &error.into()),
        }
        if !pause(upkeep, tick, upkeep.cancel).await {
            return;
        }
    }
}

/// Warns when messages of the linked publishing functions have waited longer than two leases.
async fn look_at_outbox(upkeep: &Upkeep<'_>) -> Result<(), sqlx::Error> {
    let Some(outbox) = upkeep.outbox else {
        return Ok(());
    };
    let mut conn = upkeep.pool.acquire().await?;
    let now = upkeep.clock.fixed();
    let (count, oldest) = store::outbox_backlog(conn.tx(), outbox, now).await?;
    let waited = oldest.map(|due| upkeep.clock.now().saturating_sub(due).max(0) as u64);
    if let Some(waited) = waited.filter(|waited| *waited > upkeep.lease.as_millis() as u64 * 2) {
        trace::outbox_waiting(count, Duration::from_millis(waited));
    }
    Ok(())
}

/// One round: rescues the jobs of dead workers (first giving a lapsed row to workers that left
/// none, if `adopt`), promotes due scheduled jobs, checks for due suspects and records orphans.
async fn tick_once(
    upkeep: &Upkeep<'_>,
    watch: &mut StaleWatch,
    adopt: bool,
) -> Result<(), sqlx::Error> {
    let mut conn = upkeep.pool.acquire().await?;
    let now = upkeep.clock.fixed();
    let rescued = store::rescue(conn.tx(), upkeep.worker, watch, upkeep.retry, adopt, now).await?;
    if rescued > 0 {
        trace::rescued(rescued as usize);
        upkeep.woken.notify_one();
    }
    if store::promote(conn.tx(), upkeep.handlers, now).await? > 0 {
        upkeep.woken.notify_one();
    }
    if let Some(suspects) = upkeep.suspects {
        // An idle claimer takes a suspect at once; a busy one (which must let its jobs finish
        // first) only once it has waited a lease with no idle one taking it.
        let running = upkeep
            .running
            .map_or(0, |running| running.load(Ordering::SeqCst));
        let wait = lifecycle::suspect_wait(running, upkeep.lease);
        let reserved =
            store::reserve_suspect(conn.tx(), upkeep.handlers, upkeep.worker, wait, now).await?;
        if reserved && !suspects.swap(true, Ordering::SeqCst) {
            upkeep.woken.notify_one();
        }
    }
    if let Some(claimable) = upkeep.claimable {
        let paused = store::paused_queues(conn.tx()).await?;
        if claimable.set_paused(paused) {
            upkeep.woken.notify_one(); // a queue was resumed (or paused): claim anew
        }
    }
    if let (Some(cancel), Some(in_flight)) = (upkeep.cancel, upkeep.in_flight) {
        let cancelled = store::cancelled_of(conn.tx(), &in_flight.held()).await?;
        if !cancelled.is_empty() {
            (cancel.drop)(&cancelled);
            for id in cancelled {
                in_flight.release(id);
            }
        }
    }
    if let Some(in_flight) = upkeep.in_flight {
        let running = store::running_of(conn.tx(), upkeep.worker).await?;
        let orphans = in_flight.orphans(&running, upkeep.lease * 2);
        for &token in &orphans.unclaim {
            store::unclaim(conn.tx(), token).await?;
        }
        for (job, failure) in orphans.failures(upkeep.retry, upkeep.max_age, now) {
            store::fail(conn.tx(), job, &failure).await?;
        }
    }
    Ok(())
}
