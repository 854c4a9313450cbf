//! Signals of the cross-crate wiring tests: declared here, handled in `wire-handlers` and in
//! the test binaries.

use signals_core::Signal;

/// The context of every signal here: the names of the handlers that ran, in order.
#[derive(Default)]
pub struct Trace {
    /// Handler names, in call order.
    pub calls: Vec<&'static str>,
}

/// Handled in `wire-handlers` (in private nested modules) and in the test binary.
#[derive(Signal)]
#[signal(context = Trace)]
pub struct OrderPlaced {
    /// The order.
    pub id: u64,
}

/// One of two signals named `Event`.
pub mod billing {
    /// Same type name as [`crate::shipping::Event`].
    #[derive(signals_core::Signal)]
    #[signal(context = crate::Trace)]
    pub struct Event;
}

/// One of two signals named `Event`.
pub mod shipping {
    /// Same type name as [`crate::billing::Event`].
    #[derive(signals_core::Signal)]
    #[signal(context = crate::Trace)]
    pub struct Event(pub u8);
}

/// A signal that nothing handles.
#[derive(Signal)]
pub struct Unheard;
