//! `notify` with three handlers next to the alternatives, interleaved in one run; and the cost
//! per handler with 1, 3, 10 and 100 handlers.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bevy_ecs::prelude::{Event, On, ResMut, Resource, World};
use criterion::{criterion_group, criterion_main, Criterion};
use signals_bench::{
    add_count, add_total, block_on, direct_count, direct_max, direct_total, notify_direct,
    notify_direct_async, track_max, AsyncTick, Counters, SharedCounters, Tick,
};
use signals_core::{notify, notify_all, notify_async};

include!(concat!(env!("OUT_DIR"), "/fan.rs"));

const TICK: Tick = Tick { amount: 3 };

/// A handler of any signal type, behind `dyn Any`.
type ErasedHandler = Box<dyn Fn(&dyn Any, &mut Counters)>;

/// The registry a user would write by hand: handlers boxed behind `dyn Any`, found by `TypeId`.
#[derive(Default)]
struct NaiveRegistry {
    handlers: HashMap<TypeId, Vec<ErasedHandler>>,
}

impl NaiveRegistry {
    fn on<S: Any>(&mut self, handler: fn(&S, &mut Counters)) {
        let erased = move |signal: &dyn Any, counters: &mut Counters| {
            handler(
                signal.downcast_ref::<S>().expect("keyed by TypeId"),
                counters,
            );
        };
        self.handlers
            .entry(TypeId::of::<S>())
            .or_default()
            .push(Box::new(erased));
    }

    fn notify<S: Any>(&self, signal: &S, counters: &mut Counters) {
        if let Some(handlers) = self.handlers.get(&TypeId::of::<S>()) {
            for handler in handlers {
                handler(signal, counters);
            }
        }
    }
}

#[derive(Event, Clone, Copy)]
struct BevyTick(Tick);

#[derive(Resource, Default)]
struct BevyCounters(Counters);

fn bevy_world() -> World {
    let mut world = World::new();
    world.init_resource::<BevyCounters>();
    world.add_observer(|tick: On<BevyTick>, mut c: ResMut<BevyCounters>| {
        add_total(&tick.0, &mut c.0)
    });
    world.add_observer(|tick: On<BevyTick>, mut c: ResMut<BevyCounters>| {
        add_count(&tick.0, &mut c.0)
    });
    world.add_observer(|tick: On<BevyTick>, mut c: ResMut<BevyCounters>| {
        track_max(&tick.0, &mut c.0)
    });
    world.flush();
    world
}

#[derive(Debug, Clone, Copy)]
struct ModTick(Tick);

impl mod_events::Event for ModTick {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn mod_events_dispatcher(shared: &Arc<SharedCounters>) -> mod_events::EventDispatcher {
    use mod_events::Priority;
    let dispatcher = mod_events::EventDispatcher::new();
    let c = Arc::clone(shared);
    dispatcher.subscribe_with_priority(
        move |e: &ModTick| {
            c.add_total(&e.0);
            Ok(())
        },
        Priority::High,
    );
    let c = Arc::clone(shared);
    dispatcher.subscribe_with_priority(
        move |_: &ModTick| {
            c.add_count();
            Ok(())
        },
        Priority::Normal,
    );
    let c = Arc::clone(shared);
    dispatcher.subscribe_with_priority(
        move |e: &ModTick| {
            c.track_max(&e.0);
            Ok(())
        },
        Priority::Low,
    );
    dispatcher
}

fn signals2_signal(shared: &Arc<SharedCounters>) -> signals2::Signal<(Tick,)> {
    use signals2::Connect1;
    let signal = signals2::Signal::new();
    let c = Arc::clone(shared);
    signal.connect(move |tick: Tick| c.add_total(&tick));
    let c = Arc::clone(shared);
    signal.connect(move |_: Tick| c.add_count());
    let c = Arc::clone(shared);
    signal.connect(move |tick: Tick| c.track_max(&tick));
    signal
}

fn three_handlers(c: &mut Criterion) {
    let mut group = c.benchmark_group("three_handlers");
    let mut counters = Counters::default();

    group.bench_function("direct_calls", |b| {
        b.iter(|| notify_direct(black_box(&TICK), black_box(&mut counters)))
    });

    let table: Vec<fn(&Tick, &mut Counters)> = vec![direct_total, direct_count, direct_max];
    group.bench_function("vec_fn_loop", |b| {
        b.iter(|| {
            let counters = black_box(&mut counters);
            for handler in black_box(&table) {
                handler(black_box(&TICK), counters);
            }
        })
    });

    group.bench_function("signals_notify", |b| {
        b.iter(|| notify(black_box(&TICK), black_box(&mut counters)).unwrap())
    });

    group.bench_function("signals_notify_all", |b| {
        b.iter(|| notify_all(black_box(&TICK), black_box(&mut counters)).unwrap())
    });

    let mut registry = NaiveRegistry::default();
    registry.on::<Tick>(add_total);
    registry.on::<Tick>(add_count);
    registry.on::<Tick>(track_max);
    group.bench_function("naive_registry", |b| {
        b.iter(|| registry.notify(black_box(&TICK), black_box(&mut counters)))
    });

    let mut world = bevy_world();
    group.bench_function("bevy_observers", |b| {
        b.iter(|| world.trigger(BevyTick(black_box(TICK))))
    });

    let shared = Arc::new(SharedCounters::default());
    let dispatcher = mod_events_dispatcher(&shared);
    group.bench_function("mod_events", |b| {
        b.iter(|| {
            assert!(dispatcher
                .dispatch(ModTick(black_box(TICK)))
                .all_succeeded())
        })
    });

    let signal = signals2_signal(&shared);
    group.bench_function("signals2", |b| {
        use signals2::Emit1;
        b.iter(|| signal.emit(black_box(TICK)))
    });
    group.finish();
}

/// Expands to one benchmark pair per handler count: `notify` and a `Vec<fn>` loop.
macro_rules! fan_out {
    ($group:ident, $($count:literal => $signal:ident, $table:ident;)*) => {$(
        let mut counters = Counters::default();
        let signal = $signal { amount: 3 };
        $group.bench_function(concat!("signals_notify/", $count), |b| {
            b.iter(|| notify(black_box(&signal), black_box(&mut counters)).unwrap())
        });
        let table = $table();
        $group.bench_function(concat!("vec_fn_loop/", $count), |b| {
            b.iter(|| {
                let counters = black_box(&mut counters);
                for handler in black_box(&table) {
                    handler(black_box(&signal), counters);
                }
            })
        });
    )*};
}

fn handler_count(c: &mut Criterion) {
    let mut group = c.benchmark_group("handler_count");
    fan_out!(group,
        1 => Fan1, fan1_table;
        10 => Fan10, fan10_table;
        100 => Fan100, fan100_table;
    );
    group.finish();
}

fn async_three_handlers(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_three_handlers");
    let mut counters = Counters::default();
    group.bench_function("direct_awaits", |b| {
        b.iter(|| {
            block_on(notify_direct_async(
                black_box(&TICK),
                black_box(&mut counters),
            ))
        })
    });
    let async_tick = AsyncTick { amount: 3 };
    group.bench_function("signals_notify_async", |b| {
        b.iter(|| {
            block_on(notify_async(
                black_box(&async_tick),
                black_box(&mut counters),
            ))
            .unwrap()
        })
    });
    group.bench_function("signals_notify_async_sync_handlers", |b| {
        b.iter(|| block_on(notify_async(black_box(&TICK), black_box(&mut counters))).unwrap())
    });
    group.finish();
}

criterion_group!(benches, three_handlers, handler_count, async_three_handlers);
criterion_main!(benches);
