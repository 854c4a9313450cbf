//! `tracing` spans for `notify` and each handler (feature `tracing`), and their stand-ins that
//! compile to nothing when the feature is off.

use crate::handler::{HandlerInfo, HandlerResult};
use crate::signal::SignalInfo;

pub(crate) use imp::Span;

/// The span of one notify of `signal`, which has `handlers` handlers. A signal without
/// handlers is logged at debug level: a notify that reaches nobody is often a wiring mistake.
#[inline(always)]
pub(crate) fn notify(signal: &SignalInfo, handlers: usize) -> Span {
    imp::notify(signal, handlers)
}

/// The span of one handler run; [`Span::finish`] records its outcome.
#[inline(always)]
pub(crate) fn handler(handler: &HandlerInfo) -> Span {
    imp::handler(handler)
}

#[cfg(feature = "tracing")]
mod imp {
    use std::future::Future;

    use tracing::{debug, debug_span, field, warn, Instrument};

    use super::{HandlerInfo, HandlerResult, SignalInfo};

    pub(crate) struct Span(tracing::Span);

    pub(super) fn notify(signal: &SignalInfo, handlers: usize) -> Span {
        if handlers == 0 {
            debug!(
                signal = signal.path(),
                "signal notified with no handlers; if they are in another crate, link it with `use that_crate as _;`"
            );
        }
        Span(debug_span!("notify", signal = signal.path(), handlers))
    }

    pub(super) fn handler(handler: &HandlerInfo) -> Span {
        let name = handler.name();
        Span(debug_span!(
            "handler",
            handler = name,
            outcome = field::Empty
        ))
    }

    impl Span {
        pub(crate) fn enter(&self) -> tracing::span::Entered<'_> {
            self.0.enter()
        }

        pub(crate) fn instrument<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
            future.instrument(self.0.clone())
        }

        /// Records the handler's outcome; logs a failure with the handler's error.
        pub(crate) fn finish(&self, handler: &HandlerInfo, result: &HandlerResult) {
            match result {
                Ok(()) => {
                    self.0.record("outcome", "ok");
                }
                Err(error) => {
                    self.0.record("outcome", "error");
                    warn!(parent: &self.0, handler = handler.name(), error = %error, "handler failed");
                }
            }
        }
    }
}

#[cfg(not(feature = "tracing"))]
mod imp {
    use std::future::Future;

    use super::{HandlerInfo, HandlerResult, SignalInfo};

    /// Nothing: without the `tracing` feature every call below compiles away.
    pub(crate) struct Span;

    /// Nothing, as [`Span`].
    pub(crate) struct Entered;

    #[inline(always)]
    pub(super) fn notify(_: &SignalInfo, _: usize) -> Span {
        Span
    }

    #[inline(always)]
    pub(super) fn handler(_: &HandlerInfo) -> Span {
        Span
    }

    impl Span {
        #[inline(always)]
        pub(crate) fn enter(&self) -> Entered {
            Entered
        }

        #[inline(always)]
        pub(crate) fn instrument<F: Future>(&self, future: F) -> F {
            future
        }

        #[inline(always)]
        pub(crate) fn finish(&self, _: &HandlerInfo, _: &HandlerResult) {}
    }
}
