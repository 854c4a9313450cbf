//! What `notify_async` allocates: nothing per call while each async handler's future fits in
//! `INLINE_FUTURE_BYTES`; one box per call of a handler whose future is larger.
//!
//! Counts this thread's allocations only, on a current-thread runtime.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use signals_core::{notify_async, on, Signal, INLINE_FUTURE_BYTES};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; it only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Suspends once, then completes: a real await point that allocates nothing.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[derive(Signal)]
#[signal(context = u64, asynchronous)]
struct Small {
    amount: u64,
}

#[on(Small, priority = 1)]
async fn add_later(sig: &Small, total: &mut u64) {
    YieldOnce(false).await;
    *total += sig.amount;
}

#[on(Small)]
fn add_now(sig: &Small, total: &mut u64) {
    *total += sig.amount;
}

#[derive(Signal)]
#[signal(context = u64, asynchronous)]
struct Large {
    amount: u64,
}

#[on(Large)]
async fn add_through_a_buffer(sig: &Large, total: &mut u64) {
    // Held across the await, so the future is larger than the inline space.
    let buffer = [sig.amount; INLINE_FUTURE_BYTES / 8 + 1];
    YieldOnce(false).await;
    *total += buffer[buffer.len() - 1];
}

fn current_thread<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

#[test]
fn notify_async_allocates_only_for_futures_too_large_to_hold_inline() {
    current_thread(async {
        let mut total = 0;
        // The first notify builds the program's index.
        notify_async(&Small { amount: 1 }, &mut total)
            .await
            .unwrap();
        notify_async(&Large { amount: 1 }, &mut total)
            .await
            .unwrap();

        let before = allocations();
        for amount in 0..1_000 {
            notify_async(&Small { amount }, &mut total).await.unwrap();
        }
        assert_eq!(allocations() - before, 0, "small async handlers run inline");

        let before = allocations();
        for amount in 0..1_000 {
            notify_async(&Large { amount }, &mut total).await.unwrap();
        }
        assert_eq!(
            allocations() - before,
            1_000,
            "one box per call of the large handler"
        );

        let sum: u64 = (0..1_000).sum();
        assert_eq!(total, 3 + 2 * sum + sum);
    });
}
