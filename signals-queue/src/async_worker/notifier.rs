//! The notifier: LISTENs for the jobs table's notifications on PostgreSQL and wakes the
//! producer; a hint, never the delivery path (polling finds what a lost notification would
//! have announced).

use std::sync::atomic::AtomicBool;
#[cfg(feature = "postgres")]
use std::{sync::atomic::Ordering, time::Duration};

use tokio::sync::Notify;

use crate::db::Pool;
#[cfg(feature = "postgres")]
use crate::trace;

/// Listens for the jobs table's notifications on PostgreSQL and wakes `woken` (one waiter:
/// a worker's producer, or a relay). After every (re)connection it wakes `woken` once, since
/// jobs may have been committed while no one listened. With `cancelled`, it also listens for
/// an operator's cancellations and wakes that (a worker's maintenance, which drops the
/// cancelled jobs it runs). Reconnects with backoff (reset once a connection works) until
/// `stop` is set and `stopped` notified. Returns at once on SQLite.
#[cfg(feature = "postgres")]
pub async fn listen(
    pool: &Pool,
    woken: &Notify,
    cancelled: Option<&Notify>,
    stop: &AtomicBool,
    stopped: &Notify,
) {
    #[allow(irrefutable_let_patterns)] // without `sqlx-sqlite`
    let Pool::Postgres(pool) = pool
    else {
        return;
    };
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::SeqCst) {
        let stopped = stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let connected = AtomicBool::new(false);
        let listening = async {
            let channel: String = sqlx::query_scalar(crate::postgres::CHANNEL)
                .fetch_one(pool)
                .await?;
            let cancel_channel: String = sqlx::query_scalar(crate::postgres::CANCEL_CHANNEL)
                .fetch_one(pool)
                .await?;
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(&channel).await?;
            if cancelled.is_some() {
                listener.listen(&cancel_channel).await?;
            }
            woken.notify_one();
            connected.store(true, Ordering::Relaxed);
            loop {
                // `None`: the connection was lost; sqlx reconnects (and re-LISTENs) at the
                // next call, and what was committed meanwhile needs a look: wake either way.
                let notification = listener.try_recv().await?;
                match (notification, cancelled) {
                    (Some(n), Some(cancelled)) if n.channel() == cancel_channel => {
                        cancelled.notify_one();
                    }
                    (None, Some(cancelled)) => {
                        cancelled.notify_one();
                        woken.notify_one();
                    }
                    _ => woken.notify_one(),
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            result = listening => {
                if let Err(error) = result {
                    trace::database_error("listen", &error.into());
                }
                if connected.load(Ordering::Relaxed) {
                    backoff = Duration::from_millis(50);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut stopped => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            () = &mut stopped => return,
        }
    }
}

/// Without PostgreSQL there is nothing to listen to: workers poll.
#[cfg(not(feature = "postgres"))]
pub async fn listen(_: &Pool, _: &Notify, _: Option<&Notify>, _: &AtomicBool, _: &Notify) {}
