//! The link-time tables of signals, handlers and order constraints, and how generated code
//! registers into them, for either backend.
//!
//! `#[derive(Signal)]` adds its `SignalInfo` to the signals table and `#[on]` adds a
//! `HandlerInfo` (and an `OrderConstraint` per `after`/`before`) to theirs. Where linkme supports
//! the target, every element lands in one linker section per table, so the tables are complete
//! before `main` runs, with no start-up code; elsewhere (or with the `backend-inventory`
//! feature) constructors gather them at start-up. The generated code expands to the macros
//! below, so users never see which backend a target uses. Nothing in a table is ever written.

/// The tables as linker sections (linkme): complete in the binary image, no start-up code.
#[cfg(not(signals_inventory))]
mod backend {
    use linkme::distributed_slice;

    use crate::handler::HandlerInfo;
    use crate::order::OrderConstraint;
    use crate::signal::SignalInfo;

    // linkme names each link section after the slice's identifier, so these identifiers must
    // be unique across every crate in a program, including other major versions of this one.

    /// Every signal type linked into the program, in link order. Each element is the signal's
    /// own `SignalInfo`, an immutable record (its handler cache is a static of its own).
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
mod backend {
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

pub use backend::*;

/// Not public API. Used by generated code: `static NAME: SignalInfo = ...;`, registered.
#[doc(hidden)]
#[macro_export]
#[cfg(not(signals_inventory))]
macro_rules! __signals_register_signal {
    (static $name:ident: $ty:ty = $init:expr;) => {
        #[$crate::__private::distributed_slice($crate::__private::SIGNALS)]
        #[linkme(crate = $crate::__private::linkme)]
        static $name: $ty = $init;
    };
}

/// Not public API. Used by generated code: `static NAME: SignalInfo = ...;`, registered.
#[doc(hidden)]
#[macro_export]
#[cfg(signals_inventory)]
macro_rules! __signals_register_signal {
    (static $name:ident: $ty:ty = $init:expr;) => {
        static $name: $ty = $init;
        $crate::__private::inventory::submit! {
            $crate::__private::SignalRegistration(&$name)
        }
    };
}

/// Not public API. Used by generated code: `static NAME: T = ...;` for a `HandlerInfo` or an
/// `OrderConstraint`, registered in `$slice`'s table.
#[doc(hidden)]
#[macro_export]
#[cfg(not(signals_inventory))]
macro_rules! __signals_register {
    ($slice:ident, static $name:ident: $ty:ty = $init:expr;) => {
        #[$crate::__private::distributed_slice($crate::__private::$slice)]
        #[linkme(crate = $crate::__private::linkme)]
        static $name: $ty = $init;
    };
}

/// Not public API. Used by generated code: `static NAME: T = ...;` for a `HandlerInfo` or an
/// `OrderConstraint`, registered in `$slice`'s table.
#[doc(hidden)]
#[macro_export]
#[cfg(signals_inventory)]
macro_rules! __signals_register {
    ($slice:ident, static $name:ident: $ty:ty = $init:expr;) => {
        $crate::__private::inventory::submit! { $init }
    };
}
