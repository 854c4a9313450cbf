//! The link-time tables of signals and handlers, and the index built from them at first use.
//!
//! `#[derive(Signal)]` adds a `&SignalInfo` to [`SIGNALS`] and `#[on]` adds a [`HandlerInfo`] to
//! [`HANDLERS`]: linkme places every element in one linker section per table, so the tables are
//! complete before `main` runs, with no start-up code. The first `notify` of any signal sorts all
//! handlers once (O(H log H) for H handlers in the program); each signal then caches its own
//! run of that sorted table, found by binary search.

use std::any::TypeId;
use std::cmp::Ordering;
use std::sync::OnceLock;

use crate::handler::{AsyncThunk, ErasedThunk, HandlerInfo, Thunk};
use crate::order::{self, OrderConstraint, OrderError};
use crate::signal::{Signal, SignalInfo};

/// The tables as linker sections (linkme): complete in the binary image, no start-up code.
#[cfg(not(signals_inventory))]
mod tables {
    use linkme::distributed_slice;

    use crate::handler::HandlerInfo;
    use crate::order::OrderConstraint;
    use crate::signal::SignalInfo;

    // linkme names each link section after the slice's identifier, so these identifiers must
    // be unique across every crate in a program, including other major versions of this one.

    /// Every signal type linked into the program, in link order. Each element is the signal's
    /// own `SignalInfo`, with the cache of its handler table inside (the section is writable).
    #[distributed_slice]
    pub static SIGNALS_CORE_0_1_SIGNALS: [SignalInfo];

    /// Every handler linked into the program, in link order.
    #[distributed_slice]
    pub static SIGNALS_CORE_0_1_HANDLERS: [HandlerInfo];

    /// Every `after`/`before` constraint linked into the program.
    #[distributed_slice]
    pub static SIGNALS_CORE_0_1_ORDER: [OrderConstraint];

    pub(crate) fn signals() -> impl Iterator<Item = &'static SignalInfo> {
        SIGNALS_CORE_0_1_SIGNALS.iter()
    }

    pub(crate) fn handlers() -> impl Iterator<Item = &'static HandlerInfo> {
        SIGNALS_CORE_0_1_HANDLERS.iter()
    }

    pub(crate) fn order() -> impl Iterator<Item = &'static OrderConstraint> {
        SIGNALS_CORE_0_1_ORDER.iter()
    }
}

/// The tables gathered by constructors at start-up (inventory), for targets without linker
/// sections. Each type's registry is its own, so other versions of this crate never mix in.
#[cfg(signals_inventory)]
mod tables {
    use crate::handler::HandlerInfo;
    use crate::order::OrderConstraint;
    use crate::signal::SignalInfo;

    /// A signal's registration: its `SignalInfo` lives in an ordinary static beside its type.
    #[doc(hidden)]
    pub struct SignalRegistration(pub &'static SignalInfo);

    inventory::collect!(SignalRegistration);
    inventory::collect!(HandlerInfo);
    inventory::collect!(OrderConstraint);

    pub(crate) fn signals() -> impl Iterator<Item = &'static SignalInfo> {
        inventory::iter::<SignalRegistration>
            .into_iter()
            .map(|registration| registration.0)
    }

    pub(crate) fn handlers() -> impl Iterator<Item = &'static HandlerInfo> {
        inventory::iter::<HandlerInfo>.into_iter()
    }

    pub(crate) fn order() -> impl Iterator<Item = &'static OrderConstraint> {
        inventory::iter::<OrderConstraint>.into_iter()
    }
}

pub use tables::*;

/// A handler as `notify` sees it: the type-erased thunk beside its `HandlerInfo`.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    thunk: ErasedThunk,
    info: &'static HandlerInfo,
}

impl Slot {
    pub(crate) fn info(&self) -> &'static HandlerInfo {
        self.info
    }

    /// The handler's thunk with its signal type restored.
    ///
    /// # Safety
    ///
    /// `S` must be the signal this slot's handler was registered for, and the handler must be
    /// synchronous. The first holds for every slot in `S::__info().slots()`: the index files a
    /// handler under the `TypeId` that `HandlerInfo::__new::<S>` recorded beside the `Thunk<S>`
    /// it erased, and `S::__info()` is the `SignalInfo` with `S`'s `TypeId` (the contract of the
    /// unsafe `Signal` trait). The second holds for every handler of a `SyncSignal`, since async
    /// handlers need `AsyncSignal` and a signal is never both (the contract of those unsafe
    /// traits); otherwise check `info().is_async()`.
    #[inline]
    pub(crate) unsafe fn thunk<S: Signal>(&self) -> Thunk<S> {
        // SAFETY: the caller guarantees `self.thunk` was made from a `Thunk<S>` of this `S`.
        unsafe { std::mem::transmute::<ErasedThunk, Thunk<S>>(self.thunk) }
    }

    /// The async handler's thunk with its signal type restored.
    ///
    /// # Safety
    ///
    /// As for [`Slot::thunk`], and the handler must be async (`info().is_async()`).
    #[inline]
    pub(crate) unsafe fn async_thunk<S: Signal>(&self) -> AsyncThunk<S> {
        // SAFETY: the caller guarantees `self.thunk` was made from an `AsyncThunk<S>`.
        unsafe { std::mem::transmute::<ErasedThunk, AsyncThunk<S>>(self.thunk) }
    }
}

/// All handlers sorted by signal, then run order; and all signals, by path and by type.
pub(crate) struct Index {
    /// The `TypeId` of each slot's signal, parallel to `slots`, for binary search.
    keys: Box<[TypeId]>,
    slots: Box<[Slot]>,
    by_path: Box<[&'static SignalInfo]>,
    by_type: Box<[&'static SignalInfo]>,
}

static INDEX: OnceLock<Index> = OnceLock::new();

/// The program's index, built by the first caller.
///
/// # Panics
///
/// If some signal's `after`/`before` constraints cannot all hold (a cycle); [`check_order`]
/// reports the same in a test.
///
/// [`check_order`]: crate::check_order
pub(crate) fn index() -> &'static Index {
    INDEX.get_or_init(|| Index::build().unwrap_or_else(|error| panic!("{error}")))
}

impl Index {
    pub(crate) fn build() -> Result<Index, OrderError> {
        let mut keyed: Vec<(TypeId, Slot)> = handlers()
            .map(|info| {
                let slot = Slot {
                    thunk: info.erased_thunk(),
                    info,
                };
                (info.signal_type_id(), slot)
            })
            .collect();
        keyed.sort_unstable_by(|(a_key, a), (b_key, b)| {
            a_key.cmp(b_key).then_with(|| run_order(a.info, b.info))
        });
        let (keys, mut slots) = keyed.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        apply_constraints(&keys, &mut slots)?;

        let mut by_type: Vec<&'static SignalInfo> = signals().collect();
        by_type.sort_unstable_by_key(|signal| signal.type_id());
        let mut by_path = by_type.clone();
        by_path.sort_by_key(|signal| (signal.path(), signal.file(), signal.line()));

        Ok(Index {
            keys: keys.into_boxed_slice(),
            slots: slots.into_boxed_slice(),
            by_path: by_path.into_boxed_slice(),
            by_type: by_type.into_boxed_slice(),
        })
    }

    /// The handlers of `signal`, in run order.
    pub(crate) fn slots_of(&'static self, signal: &SignalInfo) -> &'static [Slot] {
        let key = signal.type_id();
        let start = self.keys.partition_point(|&k| k < key);
        let end = start + self.keys[start..].partition_point(|&k| k == key);
        &self.slots[start..end]
    }

    /// Every signal in the program, sorted by path.
    pub(crate) fn signals(&'static self) -> &'static [&'static SignalInfo] {
        &self.by_path
    }

    /// The signal whose type is `type_id`. Every handler's signal has one: `#[on]` requires
    /// `Signal`, which only `#[derive(Signal)]` implements, and the derive registers it.
    pub(crate) fn signal(&'static self, type_id: TypeId) -> &'static SignalInfo {
        let found = self.by_type.binary_search_by_key(&type_id, |s| s.type_id());
        self.by_type[found.expect("every handler's signal is registered")]
    }
}

/// Applies every signal's `after`/`before` constraints to its run of `slots`.
fn apply_constraints(keys: &[TypeId], slots: &mut [Slot]) -> Result<(), OrderError> {
    let mut constraints: Vec<&OrderConstraint> = order().collect();
    constraints.sort_by_key(|constraint| constraint.signal());
    let mut problems = Vec::new();
    for group in constraints.chunk_by(|a, b| a.signal() == b.signal()) {
        let key = group[0].signal();
        let start = keys.partition_point(|&k| k < key);
        let end = start + keys[start..].partition_point(|&k| k == key);
        let signal = signals()
            .find(|signal| signal.type_id() == key)
            .map_or("a signal", SignalInfo::path);
        if let Err(problem) = order::apply(signal, &mut slots[start..end], group) {
            problems.push(problem);
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(OrderError::new(problems)),
    }
}

/// Higher priority first; then ascending full name; then source location, so that the order
/// never depends on link order.
fn run_order(a: &HandlerInfo, b: &HandlerInfo) -> Ordering {
    b.priority()
        .cmp(&a.priority())
        .then_with(|| a.name().cmp(b.name()))
        .then_with(|| a.file().cmp(b.file()))
        .then_with(|| a.line().cmp(&b.line()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{on, Signal};

    #[derive(Signal)]
    struct Probe;

    #[on(Probe, priority = 1)]
    fn zulu(_: &Probe) {}

    #[on(Probe, priority = 1)]
    fn alpha(_: &Probe) {}

    #[on(Probe, priority = 2)]
    fn yankee(_: &Probe) {}

    fn info(name: &str) -> &'static HandlerInfo {
        handlers().find(|h| h.name().ends_with(name)).unwrap()
    }

    #[test]
    fn run_order_is_priority_descending_then_name_ascending() {
        assert_eq!(run_order(info("::yankee"), info("::alpha")), Ordering::Less);
        assert_eq!(run_order(info("::alpha"), info("::zulu")), Ordering::Less);
        assert_eq!(
            run_order(info("::zulu"), info("::yankee")),
            Ordering::Greater
        );
        assert_eq!(run_order(info("::alpha"), info("::alpha")), Ordering::Equal);
    }

    #[test]
    fn slots_of_finds_exactly_the_signals_handlers_in_run_order() {
        let slots = index().slots_of(Probe::__info());
        let names: Vec<_> = slots.iter().map(|slot| slot.info().name()).collect();
        assert_eq!(
            names,
            [
                "signals_core::registry::tests::yankee",
                "signals_core::registry::tests::alpha",
                "signals_core::registry::tests::zulu",
            ]
        );
    }

    #[test]
    fn slice_names_carry_this_versions_semver_compatibility_range() {
        // Two semver-incompatible versions in one program must not share a linker section:
        // bump the `SIGNALS_CORE_0_1_*` names with the version.
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.');
        let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
        let range = if major == "0" {
            format!("{major}_{minor}")
        } else {
            major.to_owned()
        };
        assert_eq!(
            range, "0_1",
            "rename the SIGNALS_CORE_0_1_* slices for {version}"
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_handler_costs_48_bytes_of_table() {
        // Every handler of every program pays this; keep it from growing unnoticed.
        assert_eq!(std::mem::size_of::<HandlerInfo>(), 48);
    }

    #[test]
    fn signal_names_drop_the_module_path() {
        assert_eq!(Probe::__info().name(), "Probe");
        assert_eq!(
            Probe::__info().path(),
            "signals_core::registry::tests::Probe"
        );
    }
}
