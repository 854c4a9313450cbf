//! The error `notify` and `notify_all` return when handlers fail.

use std::fmt;

use crate::handler::{BoxError, HandlerInfo};
use crate::order::Problem;
use crate::signal::SignalInfo;

/// One or more handlers of a signal failed.
///
/// [`notify`](crate::notify) stops at the first failure, so its error holds exactly one;
/// [`notify_all`](crate::notify_all) runs every handler and reports each failure, in run order.
///
/// `Display` names the failing handler and the signal; [`source`](std::error::Error::source)
/// is the first failing handler's own error, so callers can downcast it to their type.
///
/// # Examples
///
/// ```
/// use signals_core::{notify, on, Signal};
///
/// #[derive(Debug)]
/// struct CardDeclined;
///
/// impl std::fmt::Display for CardDeclined {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("card declined")
///     }
/// }
///
/// impl std::error::Error for CardDeclined {}
///
/// #[derive(Signal)]
/// pub struct OrderCreated;
///
/// #[on(OrderCreated)]
/// fn charge_card(_: &OrderCreated) -> Result<(), CardDeclined> {
///     Err(CardDeclined)
/// }
///
/// let err = notify(&OrderCreated, &mut ()).unwrap_err();
/// assert!(err.handler().name().ends_with("::charge_card"));
/// assert_eq!(err.signal().name(), "OrderCreated");
/// assert!(err.downcast_ref::<CardDeclined>().is_some());
/// assert!(err.to_string().starts_with("handler `"));
/// ```
pub struct Error {
    /// Never empty.
    failures: Box<[Failure]>,
    /// Whether no handler ran because the signal's wiring is broken: then the one failure's
    /// error is the [`Problem`], and its handler the first one the problem names.
    wiring: bool,
}

/// One handler that failed, and what it returned.
///
/// # Examples
///
/// ```
/// use signals_core::{notify_all, on, Signal};
///
/// #[derive(Signal)]
/// pub struct Tick;
///
/// #[on(Tick)]
/// fn fails(_: &Tick) -> Result<(), std::fmt::Error> {
///     Err(std::fmt::Error)
/// }
///
/// let err = notify_all(&Tick, &mut ()).unwrap_err();
/// let failure = err.failures().next().unwrap();
/// assert!(failure.handler().name().ends_with("::fails"));
/// assert!(failure.error().is::<std::fmt::Error>());
/// ```
pub struct Failure {
    handler: &'static HandlerInfo,
    error: BoxError,
}

impl Failure {
    pub(crate) fn new(handler: &'static HandlerInfo, error: BoxError) -> Self {
        Failure { handler, error }
    }

    /// The handler that failed.
    pub fn handler(&self) -> &'static HandlerInfo {
        self.handler
    }

    /// The error the handler returned.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The error the handler returned, owned, for `Box::<dyn Error>::downcast`.
    pub fn into_error(self) -> BoxError {
        self.error
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("handler", &self.handler.name())
            .field("error", &self.error)
            .finish()
    }
}

impl Error {
    /// An error for a single failed handler. Kept out of line: it is the cold path of `notify`.
    #[cold]
    #[inline(never)]
    pub(crate) fn single(handler: &'static HandlerInfo, error: BoxError) -> Self {
        Error {
            failures: Box::new([Failure::new(handler, error)]),
            wiring: false,
        }
    }

    /// The error of a `notify` that ran no handler because `problem` keeps its signal from
    /// being notified (see [`Problem::prevents_notify`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn wiring(problem: &'static Problem) -> Self {
        let handler = problem.handlers()[0];
        Error {
            failures: Box::new([Failure::new(handler, Box::new(problem.clone()))]),
            wiring: true,
        }
    }

    /// The wiring problem that kept the signal from being notified: no handler ran. `None` when
    /// handlers ran and failed.
    pub fn wiring_problem(&self) -> Option<&Problem> {
        match self.wiring {
            true => self.first().error.downcast_ref::<Problem>(),
            false => None,
        }
    }

    /// An error for one or more failed handlers, in run order.
    pub(crate) fn from_failures(failures: Vec<Failure>) -> Self {
        debug_assert!(!failures.is_empty());
        Error {
            failures: failures.into_boxed_slice(),
            wiring: false,
        }
    }

    /// The first handler that failed.
    pub fn handler(&self) -> &'static HandlerInfo {
        self.first().handler
    }

    /// The signal whose handlers failed.
    pub fn signal(&self) -> &'static SignalInfo {
        self.handler().signal()
    }

    /// Every failure, in run order: one for `notify`, one or more for `notify_all`.
    pub fn failures(&self) -> std::slice::Iter<'_, Failure> {
        self.failures.iter()
    }

    /// The first failing handler's error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.first().error.downcast_ref::<E>()
    }

    /// Every failure, owned.
    pub fn into_failures(self) -> Vec<Failure> {
        self.failures.into_vec()
    }

    fn first(&self) -> &Failure {
        &self.failures[0]
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signal = self.signal().path();
        if let Some(problem) = self.wiring_problem() {
            return write!(
                f,
                "signal `{signal}` can't be notified, no handler ran: {problem}"
            );
        }
        match &*self.failures {
            [only] => write!(
                f,
                "handler `{}` failed on signal `{signal}`",
                only.handler.name()
            ),
            all => {
                write!(f, "{} handlers failed on signal `{signal}`: ", all.len())?;
                for (i, failure) in all.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}`{}`", failure.handler.name())?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("signal", &self.signal().path())
            .field("failures", &self.failures)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.first().error)
    }
}
