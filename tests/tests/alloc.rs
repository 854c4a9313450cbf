//! After the first notify of a signal, `notify` allocates nothing.
//!
//! A counting global allocator counts this thread's allocations only, so the test harness and
//! other threads do not disturb the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use signals_core::{notify, notify_all, on, Signal};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; it only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc`; `ptr` was allocated by `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count_allocation() {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations this thread made while running `f`.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

struct Totals {
    sum: u64,
}

#[derive(Signal)]
#[signal(context = Totals)]
struct Sale {
    amount: u64,
}

#[on(Sale, priority = 2)]
fn add(sig: &Sale, totals: &mut Totals) {
    totals.sum += sig.amount;
}

#[on(Sale, priority = 1)]
fn check(sig: &Sale, totals: &Totals) -> Result<(), std::io::Error> {
    match totals.sum >= sig.amount {
        true => Ok(()),
        false => Err(std::io::Error::other("sum went backwards")),
    }
}

#[on(Sale)]
fn double(sig: &Sale, totals: &mut Totals) -> anyhow::Result<()> {
    totals.sum += sig.amount;
    Ok(())
}

#[derive(Signal)]
struct Other;

#[on(Other)]
fn other(_: &Other) {}

#[test]
fn steady_state_notify_allocates_nothing() {
    let mut totals = Totals { sum: 0 };
    // The first notify of any signal builds the program's index: it may allocate.
    notify(&Sale { amount: 1 }, &mut totals).unwrap();
    notify(&Other, &mut ()).unwrap();

    let allocations = allocations_in(|| {
        for amount in 0..10_000 {
            notify(&Sale { amount }, &mut totals).unwrap();
            notify_all(&Sale { amount }, &mut totals).unwrap();
            notify(&Other, &mut ()).unwrap();
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(totals.sum, 2 + 4 * (0..10_000u64).sum::<u64>());
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that counts nothing.
    let allocations = allocations_in(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(allocations, 1);
}
