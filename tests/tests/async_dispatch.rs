//! `notify_async` and `notify_all_async` on a multi-threaded tokio runtime: sync and async
//! handlers in one order, errors, a borrowed context, re-entrancy, and many concurrent tasks.

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use signals_core::{handlers, notify_all_async, notify_async, on, BoxError, Signal};

/// Runs `test` to completion on a multi-threaded tokio runtime with `workers` threads.
fn on_runtime<F: std::future::Future>(workers: usize, test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .expect("a tokio runtime")
        .block_on(test)
}

/// Yields to the runtime, so that every async handler really suspends at least once.
async fn yield_now() {
    tokio::task::yield_now().await;
}

/// A context that borrows the caller's log, as a handler context borrows a transaction.
struct AsyncCtx<'a> {
    log: &'a mut Vec<String>,
}

#[derive(Debug, PartialEq)]
struct Declined(u64);

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "declined order {}", self.0)
    }
}

impl std::error::Error for Declined {}

#[derive(Signal)]
#[signal(context = AsyncCtx<'_>, asynchronous)]
struct OrderCreated {
    order_id: u64,
    decline: bool,
}

#[derive(Signal)]
#[signal(context = AsyncCtx<'_>, asynchronous)]
struct InvoiceIssued {
    order_id: u64,
}

#[on(OrderCreated, priority = 30)]
fn reserve_stock(sig: &OrderCreated, ctx: &mut AsyncCtx<'_>) {
    ctx.log.push(format!("sync reserve {}", sig.order_id));
}

#[on(OrderCreated, priority = 20)]
async fn charge_card(sig: &OrderCreated, ctx: &mut AsyncCtx<'_>) -> Result<(), Declined> {
    yield_now().await;
    if sig.decline {
        return Err(Declined(sig.order_id));
    }
    ctx.log.push(format!("async charge {}", sig.order_id));
    // Re-entrant: the invoice's handlers run now, in the same context, before `audit`.
    notify_async(
        &InvoiceIssued {
            order_id: sig.order_id,
        },
        ctx,
    )
    .await
    .map_err(|_| Declined(sig.order_id))
}

#[on(OrderCreated, priority = 10)]
async fn audit(sig: &OrderCreated, ctx: &AsyncCtx<'_>) -> anyhow::Result<()> {
    yield_now().await;
    anyhow::ensure!(!ctx.log.is_empty(), "audit runs after the others");
    let _ = sig;
    Ok(())
}

#[on(OrderCreated)]
async fn send_email(sig: &OrderCreated, ctx: &mut AsyncCtx<'_>) -> Result<(), BoxError> {
    yield_now().await;
    ctx.log.push(format!("async email {}", sig.order_id));
    if sig.decline {
        return Err("no email for a declined order".into());
    }
    Ok(())
}

#[on(InvoiceIssued)]
async fn store_invoice(sig: &InvoiceIssued, ctx: &mut AsyncCtx<'_>) {
    yield_now().await;
    ctx.log.push(format!("async invoice {}", sig.order_id));
}

#[test]
fn sync_and_async_handlers_run_in_one_order_with_reentrancy() {
    on_runtime(2, async {
        let mut log = Vec::new();
        let signal = OrderCreated {
            order_id: 7,
            decline: false,
        };
        notify_async(&signal, &mut AsyncCtx { log: &mut log })
            .await
            .unwrap();
        assert_eq!(
            log,
            [
                "sync reserve 7",
                "async charge 7",
                "async invoice 7",
                "async email 7"
            ]
        );
        let kinds: Vec<_> = handlers::<OrderCreated>().map(|h| h.is_async()).collect();
        assert_eq!(kinds, [false, true, true, true]);
    });
}

#[test]
fn the_first_error_stops_notify_async() {
    on_runtime(2, async {
        let mut log = Vec::new();
        let signal = OrderCreated {
            order_id: 8,
            decline: true,
        };
        let err = notify_async(&signal, &mut AsyncCtx { log: &mut log })
            .await
            .unwrap_err();
        assert_eq!(log, ["sync reserve 8"]);
        assert_eq!(err.handler().name(), "async_dispatch::charge_card");
        assert!(err.handler().is_async());
        assert_eq!(err.downcast_ref::<Declined>(), Some(&Declined(8)));
        assert_eq!(err.source().unwrap().to_string(), "declined order 8");
    });
}

#[test]
fn notify_all_async_runs_every_handler() {
    on_runtime(2, async {
        let mut log = Vec::new();
        let signal = OrderCreated {
            order_id: 9,
            decline: true,
        };
        let err = notify_all_async(&signal, &mut AsyncCtx { log: &mut log })
            .await
            .unwrap_err();
        assert_eq!(log, ["sync reserve 9", "async email 9"]);
        let failed: Vec<_> = err.failures().map(|f| f.handler().name()).collect();
        assert_eq!(
            failed,
            ["async_dispatch::charge_card", "async_dispatch::send_email"]
        );
    });
}

// --- A synchronous signal can be notified from async code too ---

#[derive(Signal)]
#[signal(context = u64)]
struct Ping;

#[on(Ping)]
fn count_ping(_: &Ping, count: &mut u64) {
    *count += 1;
}

#[test]
fn a_sync_signal_works_with_notify_async_too() {
    on_runtime(2, async {
        let mut count = 0;
        notify_async(&Ping, &mut count).await.unwrap();
        signals_core::notify(&Ping, &mut count).unwrap();
        assert_eq!(count, 2);
    });
}

// --- Many concurrent tasks, each with its own context ---

#[derive(Signal)]
#[signal(context = u64, asynchronous)]
struct Hit {
    weight: u64,
}

static HITS: AtomicU64 = AtomicU64::new(0);

#[on(Hit, priority = 1)]
async fn weigh(sig: &Hit, total: &mut u64) {
    yield_now().await;
    *total += sig.weight;
}

#[on(Hit)]
fn count_hit(_: &Hit) {
    HITS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn many_concurrent_tasks_count_exactly() {
    on_runtime(4, async {
        const TASKS: u64 = 64;
        const NOTIFIES: u64 = 500;
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                tokio::spawn(async move {
                    let mut total = 0;
                    for i in 0..NOTIFIES {
                        notify_async(&Hit { weight: task + i }, &mut total)
                            .await
                            .unwrap();
                    }
                    total
                })
            })
            .collect();
        for (task, handle) in (0..TASKS).zip(tasks) {
            let total = tokio::time::timeout(Duration::from_secs(60), handle)
                .await
                .expect("the task finishes")
                .unwrap();
            assert_eq!(total, task * NOTIFIES + NOTIFIES * (NOTIFIES - 1) / 2);
        }
        assert_eq!(HITS.load(Ordering::Relaxed), TASKS * NOTIFIES);
    });
}

#[test]
fn notify_async_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut log = Vec::new();
    let mut ctx = AsyncCtx { log: &mut log };
    let signal = OrderCreated {
        order_id: 1,
        decline: false,
    };
    assert_send(&notify_async(&signal, &mut ctx));
    assert_send(&notify_all_async(&signal, &mut ctx));
}
