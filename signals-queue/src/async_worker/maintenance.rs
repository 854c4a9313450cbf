//! Maintenance: renews a worker's lease (one row), rescues the jobs of workers whose lease
//! lapsed, makes its handlers' scheduled jobs available once due (PostgreSQL), and spots due
//! suspects; until the worker retires. The relay of `signals-broker` runs
//! it too: it follows the same life cycle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::asynchronous::Pool;
use crate::clock::Clock;
use crate::job::RetryPolicy;
use crate::lifecycle::StaleWatch;
use crate::store;
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
    /// Set while a suspect of these handlers is due; `None`: the claimer runs no suspects
    /// apart (a relay's messages cannot crash it).
    pub suspects: Option<&'a AtomicBool>,
    /// Set (and `retired` notified) once nothing of the worker runs any more.
    pub retire: &'a AtomicBool,
    /// See `retire`.
    pub retired: &'a Notify,
}

/// Renews, rescues and spots suspects every `tick` until `retire`; then forgets the worker's
/// lease row.
pub async fn maintain(upkeep: Upkeep<'_>) {
    let renew_every = upkeep.lease / 3;
    let tick = upkeep.tick.min(renew_every).max(Duration::from_millis(5));
    let mut watch = StaleWatch::default();
    let mut renewed: Option<Instant> = None;
    while !upkeep.retire.load(Ordering::SeqCst) {
        let retired = upkeep.retired.notified();
        tokio::pin!(retired);
        retired.as_mut().enable();
        if renewed.is_none_or(|at| at.elapsed() >= renew_every) {
            match renew(&upkeep).await {
                Ok(()) => renewed = Some(Instant::now()),
                Err(error) => trace::database_error("heartbeat", &error.into()),
            }
        }
        if let Err(error) = look_after(&upkeep, &mut watch).await {
            trace::database_error("rescue", &error.into());
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = &mut retired => {}
        }
    }
    if let Ok(mut conn) = upkeep.pool.acquire().await {
        let _ = store::retire(conn.tx(), upkeep.worker).await;
    }
}

async fn renew(upkeep: &Upkeep<'_>) -> Result<(), sqlx::Error> {
    let mut conn = upkeep.pool.acquire().await?;
    store::heartbeat(conn.tx(), upkeep.worker, upkeep.lease, upkeep.clock.fixed()).await
}

/// Rescues the jobs of dead workers, promotes due scheduled jobs and checks for due suspects.
async fn look_after(upkeep: &Upkeep<'_>, watch: &mut StaleWatch) -> Result<(), sqlx::Error> {
    let mut conn = upkeep.pool.acquire().await?;
    let now = upkeep.clock.fixed();
    let rescued = store::rescue(conn.tx(), upkeep.worker, watch, upkeep.retry, now).await?;
    if rescued > 0 {
        trace::rescued(rescued as usize);
        upkeep.woken.notify_one();
    }
    if store::promote(conn.tx(), upkeep.handlers, now).await? > 0 {
        upkeep.woken.notify_one();
    }
    if let Some(suspects) = upkeep.suspects {
        let due = store::suspect_due(conn.tx(), upkeep.handlers, now).await?;
        if due && !suspects.swap(true, Ordering::SeqCst) {
            upkeep.woken.notify_one();
        }
    }
    Ok(())
}
