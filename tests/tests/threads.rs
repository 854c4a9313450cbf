//! `notify` from many threads at once, each with its own context, including the very first
//! notify (the index is built once, by whichever thread gets there first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;

use signals_core::{notify, on, Signal};

const THREADS: u64 = 8;
const NOTIFIES: u64 = 20_000;

#[derive(Default)]
struct Tally {
    counted: u64,
    weighted: u64,
}

#[derive(Signal)]
#[signal(context = Tally)]
struct Hit {
    weight: u64,
}

static GLOBAL_HITS: AtomicU64 = AtomicU64::new(0);

#[on(Hit, priority = 1)]
fn count(_: &Hit, tally: &mut Tally) {
    tally.counted += 1;
}

#[on(Hit)]
fn weigh(sig: &Hit, tally: &mut Tally) {
    tally.weighted += sig.weight;
}

#[on(Hit, priority = -1)]
fn count_globally(_: &Hit) {
    GLOBAL_HITS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn eight_threads_notify_twenty_thousand_times_each() {
    let start = Barrier::new(THREADS as usize);
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let start = &start;
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    start.wait();
                    for i in 0..NOTIFIES {
                        notify(&Hit { weight: thread + i }, &mut tally).unwrap();
                    }
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    for (thread, tally) in (0..THREADS).zip(&tallies) {
        assert_eq!(tally.counted, NOTIFIES);
        assert_eq!(
            tally.weighted,
            thread * NOTIFIES + NOTIFIES * (NOTIFIES - 1) / 2
        );
    }
    assert_eq!(GLOBAL_HITS.load(Ordering::Relaxed), THREADS * NOTIFIES);
}
