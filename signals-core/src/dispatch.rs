//! `notify` and `notify_all`: a loop over a signal's handler table.

use crate::error::{Error, Failure};
use crate::handler::HandlerResult;
use crate::index;
use crate::signal::{Signal, SignalInfo, SignalTable, Slot, SyncSignal};
use crate::trace;

/// Runs the handlers of `signal` in order, in this thread and call stack; stops at the first error.
///
/// Handlers run by descending priority, then ascending full name. Each receives `signal` and,
/// if it asks for it, `ctx` (as `&` or `&mut`). A handler may itself call `notify` with the
/// same context: the nested signal's handlers run to completion before the outer loop goes
/// on (depth-first), inside whatever transaction the context carries.
///
/// After the first notify of any signal, a call allocates nothing and hashes nothing: it reads
/// the signal's cached table and calls each function pointer.
///
/// # Errors
///
/// The first handler to return `Err` stops the loop; the returned [`Error`] names that
/// handler, and its [`source`](std::error::Error::source) is the handler's own error. Handlers
/// after it do not run; what earlier handlers did is not undone (roll back the transaction in
/// the context to undo it).
///
/// If the signal's wiring is broken (its `after`/`before` constraints cannot hold, or a
/// function is registered twice for it), no handler runs and the error carries the
/// [`Problem`](crate::Problem) ([`Error::wiring_problem`]); [`check_order`](crate::check_order)
/// finds these in a test.
///
/// # Examples
///
/// ```
/// use signals_core::{notify, on, Signal};
///
/// pub struct Audit {
///     pub lines: Vec<String>,
/// }
///
/// #[derive(Signal)]
/// #[signal(context = Audit)]
/// pub struct OrderCreated {
///     pub order_id: u64,
/// }
///
/// #[on(OrderCreated)]
/// fn write_audit_log(sig: &OrderCreated, audit: &mut Audit) {
///     audit.lines.push(format!("order {} created", sig.order_id));
/// }
///
/// let mut audit = Audit { lines: Vec::new() };
/// notify(&OrderCreated { order_id: 7 }, &mut audit)?;
/// assert_eq!(audit.lines, ["order 7 created"]);
/// # Ok::<(), signals_core::Error>(())
/// ```
#[inline]
pub fn notify<S: Signal + SyncSignal>(signal: &S, ctx: &mut S::Context<'_>) -> Result<(), Error> {
    let (slots, span) = start(signal)?;
    let _entered = span.enter();
    for slot in slots {
        if let Err(error) = run_sync(slot, signal, ctx) {
            return Err(Error::single(slot.info(), error));
        }
    }
    Ok(())
}

/// Runs one handler of a synchronous signal `S`.
#[inline(always)]
fn run_sync<S: SyncSignal>(slot: &Slot, signal: &S, ctx: &mut S::Context<'_>) -> HandlerResult {
    if muted(slot) {
        return Ok(());
    }
    // SAFETY: `slot` comes from `S`'s own handler table, and every handler of a `SyncSignal`
    // is synchronous (see `Slot::thunk`).
    let thunk = unsafe { slot.thunk::<S>() };
    let span = trace::handler(slot.info());
    let result = {
        let _entered = span.enter();
        thunk(signal, ctx)
    };
    span.finish(slot.info(), &result);
    result
}

/// Runs every handler of `signal` in order, even when some fail.
///
/// Use it for handlers that are independent of each other, where one failure should not keep
/// the others from running (e.g. notifications to several systems).
///
/// # Errors
///
/// If any handler failed, an [`Error`] whose [`failures`](Error::failures) lists every failing
/// handler and its error, in run order.
///
/// # Examples
///
/// ```
/// use signals_core::{notify_all, on, Signal};
///
/// #[derive(Signal)]
/// #[signal(context = Vec<&'static str>)]
/// pub struct Shutdown;
///
/// #[on(Shutdown, priority = 2)]
/// fn flush_cache(_: &Shutdown, log: &mut Vec<&'static str>) -> Result<(), std::io::Error> {
///     log.push("cache");
///     Err(std::io::Error::other("disk full"))
/// }
///
/// #[on(Shutdown, priority = 1)]
/// fn close_sockets(_: &Shutdown, log: &mut Vec<&'static str>) {
///     log.push("sockets");
/// }
///
/// let mut log = Vec::new();
/// let err = notify_all(&Shutdown, &mut log).unwrap_err();
/// assert_eq!(log, ["cache", "sockets"]);
/// assert_eq!(err.failures().len(), 1);
/// assert!(err.handler().name().ends_with("::flush_cache"));
/// ```
#[inline]
pub fn notify_all<S: Signal + SyncSignal>(
    signal: &S,
    ctx: &mut S::Context<'_>,
) -> Result<(), Error> {
    let (slots, span) = start(signal)?;
    let _entered = span.enter();
    for (index, slot) in slots.iter().enumerate() {
        if let Err(error) = run_sync(slot, signal, ctx) {
            let first = Failure::new(slot.info(), error);
            return Err(run_after_failure(&slots[index + 1..], first, signal, ctx));
        }
    }
    Ok(())
}

/// The rest of `notify_all` once a handler has failed: out of the fast path.
#[cold]
#[inline(never)]
fn run_after_failure<S: SyncSignal>(
    rest: &[Slot],
    first: Failure,
    signal: &S,
    ctx: &mut S::Context<'_>,
) -> Error {
    let mut failures = vec![first];
    for slot in rest {
        if let Err(error) = run_sync(slot, signal, ctx) {
            failures.push(Failure::new(slot.info(), error));
        }
    }
    Error::from_failures(failures)
}

/// Runs the handlers of `signal` in order, awaiting each `async fn` handler before the next
/// one starts; stops at the first error.
///
/// The order, the context and the errors are those of [`notify`]: sync and async handlers run
/// in one sequence, by descending priority and then name. Any signal can be notified this way;
/// a signal with `async fn` handlers (declared `#[signal(asynchronous)]`) can only be notified
/// this way. The context may borrow, e.g. a `sqlx::Transaction`, so that handlers write in the
/// caller's transaction.
///
/// The future is `Send` when `S: Sync` and the context is `Send`, so it can be awaited in a
/// `tokio::spawn`ed task or an axum handler. Async handlers' futures must be `Send`.
///
/// # Cost
///
/// No heap allocation per call, except that an async handler whose future is larger than
/// [`INLINE_FUTURE_BYTES`](crate::INLINE_FUTURE_BYTES) is boxed (one allocation per call of
/// that handler). The returned future holds one handler future inline, so it is about that
/// large.
///
/// # Errors
///
/// As for [`notify`]: the first handler to fail stops the loop and is named in the [`Error`].
///
/// # Examples
///
/// ```
/// use signals_core::{notify_async, on, Signal};
///
/// #[derive(Signal)]
/// #[signal(context = Vec<String>, asynchronous)]
/// pub struct UserSignedUp {
///     pub email: String,
/// }
///
/// #[on(UserSignedUp)]
/// async fn send_welcome_email(sig: &UserSignedUp, outbox: &mut Vec<String>) -> Result<(), std::io::Error> {
///     std::future::ready(()).await; // e.g. an SMTP call
///     outbox.push(format!("welcome, {}", sig.email));
///     Ok(())
/// }
///
/// # fn block_on<F: std::future::Future>(future: F) -> F::Output {
/// #     let mut future = std::pin::pin!(future);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
/// #             return output;
/// #         }
/// #     }
/// # }
/// block_on(async {
///     let mut outbox = Vec::new();
///     notify_async(&UserSignedUp { email: "ada@example.com".into() }, &mut outbox).await?;
///     assert_eq!(outbox, ["welcome, ada@example.com"]);
///     Ok::<(), signals_core::Error>(())
/// })?;
/// # Ok::<(), signals_core::Error>(())
/// ```
pub async fn notify_async<S: Signal>(signal: &S, ctx: &mut S::Context<'_>) -> Result<(), Error> {
    let (slots, span) = start(signal)?;
    let run = async {
        for slot in slots {
            if let Err(error) = run_async_or_sync(slot, signal, ctx).await {
                return Err(Error::single(slot.info(), error));
            }
        }
        Ok(())
    };
    span.instrument(run).await
}

/// Runs every handler of `signal` in order, sync and async, even when some fail.
///
/// # Errors
///
/// As for [`notify_all`]: every failure, in run order.
pub async fn notify_all_async<S: Signal>(
    signal: &S,
    ctx: &mut S::Context<'_>,
) -> Result<(), Error> {
    let (slots, span) = start(signal)?;
    let run = async {
        let mut failures = Vec::new();
        for slot in slots {
            if let Err(error) = run_async_or_sync(slot, signal, ctx).await {
                failures.push(Failure::new(slot.info(), error));
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Error::from_failures(failures)),
        }
    };
    span.instrument(run).await
}

/// Runs one handler of `S`: calls it if it is synchronous, awaits its future if it is async.
#[inline]
async fn run_async_or_sync<S: Signal>(
    slot: &Slot,
    signal: &S,
    ctx: &mut S::Context<'_>,
) -> HandlerResult {
    if muted(slot) {
        return Ok(());
    }
    let span = trace::handler(slot.info());
    let result = if slot.info().is_async() {
        // SAFETY: `slot` comes from `S`'s own table and is async (see `Slot::async_thunk`).
        let thunk = unsafe { slot.async_thunk::<S>() };
        span.instrument(thunk(signal, ctx)).await
    } else {
        // SAFETY: `slot` comes from `S`'s own table and is synchronous (see `Slot::thunk`).
        let thunk = unsafe { slot.thunk::<S>() };
        let _entered = span.enter();
        thunk(signal, ctx)
    };
    span.finish(slot.info(), &result);
    result
}

/// What every notify does first: find the signal's table, tell the test kit, open the span.
#[inline(always)]
fn start<S: Signal>(signal: &S) -> Result<(&'static [Slot], trace::Span), Error> {
    let info = S::__info();
    let slots = match S::__table().get() {
        Some(slots) => slots,
        None => load(info, S::__table())?,
    };
    recorded(signal);
    Ok((slots, trace::notify(info, slots.len())))
}

/// The signal's handlers at its first `notify`, or the error of a signal whose wiring is broken
/// (at every `notify` of it: such a signal is never cached).
#[cold]
#[inline(never)]
fn load(info: &'static SignalInfo, table: &SignalTable) -> Result<&'static [Slot], Error> {
    index::load(info, table).map_err(Error::wiring)
}

/// Tells this thread's test recorders (feature `testing`) about a notify; nothing otherwise.
#[inline(always)]
fn recorded<S: Signal>(signal: &S) {
    #[cfg(feature = "testing")]
    crate::testing::notified(signal);
    #[cfg(not(feature = "testing"))]
    let _ = signal;
}

/// Whether a test muted this handler on this thread (feature `testing`); never otherwise.
#[inline(always)]
fn muted(slot: &Slot) -> bool {
    #[cfg(feature = "testing")]
    return crate::testing::is_muted(slot.info());
    #[cfg(not(feature = "testing"))]
    {
        let _ = slot;
        false
    }
}
