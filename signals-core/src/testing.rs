//! A test kit (feature `testing`, for dev-dependencies): record what a scope notifies, check
//! the wiring, and mute handlers, on the current thread only, so that tests running in
//! parallel on other threads are not affected.
//!
//! ```toml
//! [dev-dependencies]
//! # Not on crates.io yet: the same checkout as in `[dependencies]`.
//! signals-core = { path = "../signals/signals-core", features = ["testing"] }
//! ```
//!
//! Everything here works on the thread that calls it: a [`Recorder`] sees the signals notified
//! on its thread, a [`Muted`] guard mutes handlers on its thread. Async code run by a
//! current-thread runtime (`#[tokio::test]`'s default) stays on the test's thread.
//!
//! # Examples
//!
//! ```
//! use signals_core::testing::{self, Recorder};
//! use signals_core::{notify, on, Signal};
//!
//! #[derive(Signal)]
//! pub struct OrderCreated {
//!     pub total: u64,
//! }
//!
//! #[on(OrderCreated)]
//! fn charge_card(_: &OrderCreated) -> Result<(), std::io::Error> {
//!     Err(std::io::Error::other("no network in tests"))
//! }
//!
//! testing::assert_wired::<OrderCreated>("rust_out::charge_card");
//!
//! let recorder = Recorder::start();
//! let large = recorder.watch(|order: &OrderCreated| order.total > 100);
//! {
//!     let _muted = testing::mute("rust_out::charge_card");
//!     notify(&OrderCreated { total: 250 }, &mut ())?;
//! }
//! recorder.assert_notified_times::<OrderCreated>(1);
//! assert_eq!(large.count(), 1);
//! # Ok::<(), signals_core::Error>(())
//! ```

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::catalog::NO_HANDLERS;
use crate::handler::HandlerInfo;
use crate::signal::Signal;
use crate::tables;

/// What one [`Recorder`] has seen.
#[derive(Default)]
struct Recording {
    /// Every notify, in order.
    notified: Vec<Notified>,
    watches: Vec<WatchEntry>,
}

/// One recorded notify: the signal's type and path, and its `Debug` rendering if it has one.
struct Notified {
    signal: TypeId,
    path: &'static str,
    rendering: Option<String>,
}

/// A watch's predicate, taking the signal behind `dyn Any`.
type Predicate = Box<dyn Fn(&dyn Any) -> bool>;

/// A [`Recorder::watch`]: the signal type, its predicate, and how often it accepted.
struct WatchEntry {
    signal: TypeId,
    accepts: Predicate,
    count: Rc<Cell<usize>>,
}

thread_local! {
    static RECORDERS: RefCell<Vec<Rc<RefCell<Recording>>>> = const { RefCell::new(Vec::new()) };
    static MUTED: RefCell<Vec<&'static HandlerInfo>> = const { RefCell::new(Vec::new()) };
}

/// Records every signal notified on this thread while it lives: its type, and its `Debug`
/// rendering when the signal type implements `Debug`.
///
/// `Recorder::start()` begins; dropping it ends. Recorders nest: each sees what happens during
/// its own life.
#[must_use = "the recorder records only while it lives"]
pub struct Recorder {
    recording: Rc<RefCell<Recording>>,
}

/// Counts the notifies whose signal a [`Recorder::watch`] predicate accepted.
pub struct Watch {
    count: Rc<Cell<usize>>,
}

impl Watch {
    /// How many notifies the predicate accepted so far.
    pub fn count(&self) -> usize {
        self.count.get()
    }
}

impl Recorder {
    /// Starts recording the signals notified on this thread.
    pub fn start() -> Recorder {
        let recording = Rc::new(RefCell::new(Recording::default()));
        RECORDERS.with(|recorders| recorders.borrow_mut().push(Rc::clone(&recording)));
        Recorder { recording }
    }

    /// Counts, from now on, the notifies of `S` that `predicate` accepts.
    pub fn watch<S: Signal>(&self, predicate: impl Fn(&S) -> bool + 'static) -> Watch {
        let count = Rc::new(Cell::new(0));
        let erased = move |signal: &dyn Any| signal.downcast_ref::<S>().is_some_and(&predicate);
        self.recording.borrow_mut().watches.push(WatchEntry {
            signal: TypeId::of::<S>(),
            accepts: Box::new(erased),
            count: Rc::clone(&count),
        });
        Watch { count }
    }

    /// The paths of the signals notified so far, in order.
    pub fn notified(&self) -> Vec<&'static str> {
        let recording = self.recording.borrow();
        recording
            .notified
            .iter()
            .map(|notified| notified.path)
            .collect()
    }

    /// The `Debug` renderings of the notifies of `S` so far, in order; empty strings if `S` does
    /// not implement `Debug`.
    pub fn renderings<S: Signal>(&self) -> Vec<String> {
        let recording = self.recording.borrow();
        let of_s = recording
            .notified
            .iter()
            .filter(|n| n.signal == TypeId::of::<S>());
        of_s.map(|n| n.rendering.clone().unwrap_or_default())
            .collect()
    }

    /// How many times `S` was notified so far.
    pub fn count<S: Signal>(&self) -> usize {
        let recording = self.recording.borrow();
        let id = TypeId::of::<S>();
        recording.notified.iter().filter(|n| n.signal == id).count()
    }

    /// Panics, listing what was notified, unless `S` was notified at least once.
    #[track_caller]
    pub fn assert_notified<S: Signal>(&self) {
        if self.count::<S>() == 0 {
            self.fail::<S>("to be notified");
        }
    }

    /// Panics, listing what was notified, unless `S` was notified exactly `times` times.
    #[track_caller]
    pub fn assert_notified_times<S: Signal>(&self, times: usize) {
        if self.count::<S>() != times {
            self.fail::<S>(&format!("to be notified {times} times"));
        }
    }

    /// Panics, listing what was notified, if `S` was notified.
    #[track_caller]
    pub fn assert_not_notified<S: Signal>(&self) {
        if self.count::<S>() != 0 {
            self.fail::<S>("not to be notified");
        }
    }

    #[track_caller]
    fn fail<S: Signal>(&self, expected: &str) -> ! {
        let path = S::__info().path();
        let count = self.count::<S>();
        let recording = self.recording.borrow();
        let notified: Vec<&str> = recording
            .notified
            .iter()
            .map(|n| n.rendering.as_deref().unwrap_or(n.path))
            .collect();
        panic!("expected `{path}` {expected}, but it was notified {count} times; notified: {notified:?}");
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = RECORDERS.try_with(|recorders| {
            recorders
                .borrow_mut()
                .retain(|recording| !Rc::ptr_eq(recording, &self.recording));
        });
    }
}

/// Panics with the handlers `S` actually has unless one of them is named `handler` (its full
/// path, e.g. `shop_handlers::billing::create_billing_record`). Guards against a handler
/// crate the linker left out (see the README's linker rule).
#[track_caller]
pub fn assert_wired<S: Signal>(handler: &str) {
    let handlers: Vec<&str> = S::__info().handlers().map(HandlerInfo::name).collect();
    if handlers.contains(&handler) {
        return;
    }
    let signal = S::__info().path();
    if handlers.is_empty() {
        panic!("`{handler}` does not handle `{signal}`: `{signal}` has {NO_HANDLERS}");
    }
    let crate_name = handler.split("::").next().unwrap_or(handler);
    let linked = tables::handlers().any(|h| h.name().split("::").next() == Some(crate_name));
    let hint = match linked {
        true => String::new(),
        false => format!(
            "; no handler of crate `{crate_name}` is linked into this program: if it is a dependency, link it with `use {crate_name} as _;`"
        ),
    };
    panic!("`{handler}` does not handle `{signal}`; its handlers are {handlers:?}{hint}");
}

/// Mutes handlers on this thread while it lives; see [`mute`] and [`only`].
#[must_use = "handlers are muted only while the guard lives"]
pub struct Muted {
    handlers: Vec<&'static HandlerInfo>,
}

/// Mutes the handler whose full path is `handler`, of whatever signal, on this thread until
/// the guard drops. Panics if no handler in the program has that path, or if two different
/// functions do (see [`check_order`](crate::check_order)).
#[track_caller]
pub fn mute(handler: &str) -> Muted {
    let found: Vec<&'static HandlerInfo> = tables::handlers()
        .filter(|info| info.name() == handler)
        .collect();
    let Some(first) = found.first() else {
        panic!("no handler named `{handler}` is linked into this program");
    };
    if let Some(other) = found.iter().find(|info| !info.same_function(first)) {
        panic!(
            "`{handler}` is ambiguous: different functions at {}:{} and {}:{} have that name; rename one",
            first.file(),
            first.line(),
            other.file(),
            other.line(),
        );
    }
    Muted::install(found)
}

/// Mutes every handler of `S` except those named in `handlers`, on this thread until the guard
/// drops. Panics if a name is not a handler of `S`.
#[track_caller]
pub fn only<S: Signal>(handlers: &[&str]) -> Muted {
    for &name in handlers {
        assert_wired::<S>(name);
    }
    let muted = S::__info()
        .handlers()
        .filter(|info| !handlers.contains(&info.name()))
        .collect();
    Muted::install(muted)
}

impl Muted {
    fn install(handlers: Vec<&'static HandlerInfo>) -> Muted {
        MUTED.with(|muted| muted.borrow_mut().extend(handlers.iter().copied()));
        Muted { handlers }
    }
}

impl Drop for Muted {
    fn drop(&mut self) {
        let _ = MUTED.try_with(|muted| {
            let mut muted = muted.borrow_mut();
            for handler in &self.handlers {
                if let Some(at) = muted.iter().position(|m| std::ptr::eq(*m, *handler)) {
                    muted.swap_remove(at);
                }
            }
        });
    }
}

/// Called by `notify` for every signal: records it in this thread's recorders.
pub(crate) fn notified<S: Signal>(signal: &S) {
    let _ = RECORDERS.try_with(|recorders| {
        for recording in recorders.borrow().iter() {
            let mut recording = recording.borrow_mut();
            recording.notified.push(Notified {
                signal: TypeId::of::<S>(),
                path: S::__info().path(),
                rendering: signal.__debug(),
            });
            for watch in &recording.watches {
                if watch.signal == TypeId::of::<S>() && (watch.accepts)(signal) {
                    watch.count.set(watch.count.get() + 1);
                }
            }
        }
    });
}

/// Called by `notify` before each handler: whether this thread muted it.
pub(crate) fn is_muted(handler: &HandlerInfo) -> bool {
    MUTED
        .try_with(|muted| muted.borrow().iter().any(|m| std::ptr::eq(*m, handler)))
        .unwrap_or(false)
}
