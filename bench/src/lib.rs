//! What every benchmark dispatches: one signal, one context, the same three handler bodies.
//!
//! The bodies are `#[inline(always)]` so that every dispatcher runs the same instructions
//! inside its handlers and only the dispatch differs. Dispatchers whose handlers cannot take a
//! caller's context (mod-events, signals2, bevy) reach [`SharedCounters`] or a bevy resource
//! instead.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use signals_core::{on, Signal};

/// The context every handler adds to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sum of all amounts.
    pub total: u64,
    /// Number of signals seen.
    pub count: u64,
    /// Largest amount seen.
    pub max: u64,
}

/// The benchmarked signal.
#[derive(Signal, Clone, Copy, Debug)]
#[signal(context = Counters)]
pub struct Tick {
    /// What the handlers add up.
    pub amount: u64,
}

/// Handler body 1.
#[inline(always)]
pub fn add_total(sig: &Tick, counters: &mut Counters) {
    counters.total = counters.total.wrapping_add(sig.amount);
}

/// Handler body 2.
#[inline(always)]
pub fn add_count(_: &Tick, counters: &mut Counters) {
    counters.count += 1;
}

/// Handler body 3.
#[inline(always)]
pub fn track_max(sig: &Tick, counters: &mut Counters) {
    counters.max = counters.max.max(sig.amount);
}

#[on(Tick, priority = 2)]
fn on_total(sig: &Tick, counters: &mut Counters) {
    add_total(sig, counters);
}

#[on(Tick, priority = 1)]
fn on_count(sig: &Tick, counters: &mut Counters) {
    add_count(sig, counters);
}

#[on(Tick)]
fn on_max(sig: &Tick, counters: &mut Counters) {
    track_max(sig, counters);
}

/// Body 1 behind a call that is never inlined: what a direct call costs.
#[inline(never)]
pub fn direct_total(sig: &Tick, counters: &mut Counters) {
    add_total(sig, counters);
}

/// Body 2, never inlined.
#[inline(never)]
pub fn direct_count(sig: &Tick, counters: &mut Counters) {
    add_count(sig, counters);
}

/// Body 3, never inlined.
#[inline(never)]
pub fn direct_max(sig: &Tick, counters: &mut Counters) {
    track_max(sig, counters);
}

/// The physical limit: three direct calls.
#[inline(always)]
pub fn notify_direct(sig: &Tick, counters: &mut Counters) {
    direct_total(sig, counters);
    direct_count(sig, counters);
    direct_max(sig, counters);
}

/// Counters for handlers that capture their state instead of receiving a context. Relaxed
/// loads and stores compile to plain moves, so the bodies cost what they cost on `Counters`.
#[derive(Debug, Default)]
pub struct SharedCounters {
    total: AtomicU64,
    count: AtomicU64,
    max: AtomicU64,
}

impl SharedCounters {
    /// Body 1 on shared counters.
    #[inline(always)]
    pub fn add_total(&self, sig: &Tick) {
        let total = self.total.load(Relaxed).wrapping_add(sig.amount);
        self.total.store(total, Relaxed);
    }

    /// Body 2 on shared counters.
    #[inline(always)]
    pub fn add_count(&self) {
        self.count.store(self.count.load(Relaxed) + 1, Relaxed);
    }

    /// Body 3 on shared counters.
    #[inline(always)]
    pub fn track_max(&self, sig: &Tick) {
        self.max
            .store(self.max.load(Relaxed).max(sig.amount), Relaxed);
    }

    /// The current values.
    pub fn get(&self) -> Counters {
        Counters {
            total: self.total.load(Relaxed),
            count: self.count.load(Relaxed),
            max: self.max.load(Relaxed),
        }
    }
}

/// The benchmarked signal for async dispatch: the same bodies, as `async fn` handlers.
#[derive(Signal, Clone, Copy, Debug)]
#[signal(context = Counters, asynchronous)]
pub struct AsyncTick {
    /// What the handlers add up.
    pub amount: u64,
}

impl AsyncTick {
    fn tick(&self) -> Tick {
        Tick {
            amount: self.amount,
        }
    }
}

#[on(AsyncTick, priority = 2)]
async fn on_total_async(sig: &AsyncTick, counters: &mut Counters) {
    add_total(&sig.tick(), counters);
}

#[on(AsyncTick, priority = 1)]
async fn on_count_async(sig: &AsyncTick, counters: &mut Counters) {
    add_count(&sig.tick(), counters);
}

#[on(AsyncTick)]
async fn on_max_async(sig: &AsyncTick, counters: &mut Counters) {
    track_max(&sig.tick(), counters);
}

/// Body 1 as an `async fn` that is never inlined: what awaiting it directly costs.
#[inline(never)]
pub async fn direct_total_async(sig: &Tick, counters: &mut Counters) {
    add_total(sig, counters);
}

/// Body 2, async, never inlined.
#[inline(never)]
pub async fn direct_count_async(sig: &Tick, counters: &mut Counters) {
    add_count(sig, counters);
}

/// Body 3, async, never inlined.
#[inline(never)]
pub async fn direct_max_async(sig: &Tick, counters: &mut Counters) {
    track_max(sig, counters);
}

/// The floor for async dispatch: three direct `.await`s.
pub async fn notify_direct_async(sig: &Tick, counters: &mut Counters) {
    direct_total_async(sig, counters).await;
    direct_count_async(sig, counters).await;
    direct_max_async(sig, counters).await;
}

/// Polls `future` to completion on this thread with a waker that does nothing: enough for
/// futures that never wait on I/O, and the same harness for every async benchmark.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}
