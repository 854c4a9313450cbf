//! How generated code registers signals, handlers and order constraints, for either backend.
//!
//! `#[derive(Signal)]` and `#[on]` expand to these macros, so users never see which backend a
//! target uses: linker sections through linkme where linkme supports the target, constructors
//! through inventory elsewhere (or with the `backend-inventory` feature).

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
