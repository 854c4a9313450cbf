//! The catalog: every signal linked into the program, who reacts to it, in which order, and
//! what is wrong with the wiring.

use std::fmt;
use std::iter::FusedIterator;

use crate::handler::HandlerInfo;
use crate::index::index;
use crate::order::{OrderError, Problem};
use crate::signal::{Signal, SignalInfo, Slot};

/// Every signal type linked into the program, with its handlers in run order.
///
/// Signals without handlers are listed too. The signals are sorted by path. `Display` prints a
/// table meant for people ("who reacts to what"); iterate for tools.
///
/// # Examples
///
/// ```
/// use signals_core::{catalog, on, Signal};
///
/// #[derive(Signal)]
/// pub struct UserSignedUp;
///
/// #[on(UserSignedUp)]
/// fn send_welcome_email(_: &UserSignedUp) {}
///
/// for signal in catalog() {
///     for handler in signal.handlers() {
///         println!("{} -> {}", signal.path(), handler.name());
///     }
/// }
///
/// let table = catalog().to_string();
/// assert!(table.contains("::UserSignedUp"));
/// assert!(table.contains("::send_welcome_email"));
/// ```
#[derive(Clone, Copy)]
pub struct Catalog {
    signals: &'static [&'static SignalInfo],
}

/// The catalog of every signal linked into the program; see [`Catalog`].
pub fn catalog() -> Catalog {
    Catalog {
        signals: index().signals(),
    }
}

impl Catalog {
    /// Every signal, sorted by path.
    pub fn signals(&self) -> Signals {
        Signals {
            signals: self.signals.iter(),
        }
    }

    /// The entry of signal type `S`.
    pub fn get<S: Signal>(&self) -> &'static SignalInfo {
        S::__info()
    }

    /// The signals whose path is `path`; more than one only when two crates of the same name
    /// and path (e.g. two versions of one crate) each define it.
    pub fn find<'a>(&self, path: &'a str) -> impl Iterator<Item = &'static SignalInfo> + 'a {
        self.signals().filter(move |signal| signal.path() == path)
    }

    /// Every wiring problem in the program (see [`check_order`]).
    pub fn problems(&self) -> &'static [Problem] {
        index().problems()
    }

    /// How many signal types the program has.
    pub fn len(&self) -> usize {
        self.signals.len()
    }

    /// Whether the program has no signal types at all.
    pub fn is_empty(&self) -> bool {
        self.signals.is_empty()
    }
}

impl IntoIterator for Catalog {
    type Item = &'static SignalInfo;
    type IntoIter = Signals;

    fn into_iter(self) -> Signals {
        self.signals()
    }
}

/// The signals of a [`Catalog`], sorted by path.
#[derive(Clone, Debug)]
pub struct Signals {
    signals: std::slice::Iter<'static, &'static SignalInfo>,
}

impl Iterator for Signals {
    type Item = &'static SignalInfo;

    fn next(&mut self) -> Option<Self::Item> {
        self.signals.next().copied()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.signals.size_hint()
    }
}

impl DoubleEndedIterator for Signals {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.signals.next_back().copied()
    }
}

impl ExactSizeIterator for Signals {}

impl std::iter::FusedIterator for Signals {}

/// The handlers of `S` in the order [`notify`](crate::notify) runs them.
///
/// # Examples
///
/// ```
/// use signals_core::{on, Signal};
///
/// #[derive(Signal)]
/// pub struct Ping;
///
/// #[on(Ping, priority = 10)]
/// fn urgent(_: &Ping) {}
///
/// #[on(Ping)]
/// fn routine(_: &Ping) {}
///
/// let order: Vec<i32> = signals_core::handlers::<Ping>().map(|h| h.priority()).collect();
/// assert_eq!(order, [10, 0]);
/// ```
pub fn handlers<S: Signal>() -> Handlers {
    S::__info().handlers()
}

impl fmt::Display for Catalog {
    /// One line per signal, then one line per handler: priority, full name (with its filter and
    /// `after` constraints), `file:line`; then the signal's wiring problems, marked `!`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all_handlers = || self.signals().flat_map(|signal| signal.handlers());
        let name_width = all_handlers().map(|h| label(h).len()).max().unwrap_or(0);
        let priority_width = all_handlers()
            .map(|h| h.priority().to_string().len())
            .max()
            .unwrap_or(1);
        for signal in self.signals() {
            let handlers = signal.handlers();
            let count = match handlers.len() {
                0 => NO_HANDLERS.to_owned(),
                1 => "1 handler".to_owned(),
                n => format!("{n} handlers"),
            };
            let mut kind = match signal.is_async() {
                true => "asynchronous; ".to_owned(),
                false => String::new(),
            };
            if let Some(schedule) = signal.schedule() {
                kind.push_str(&format!("{schedule}; "));
            }
            writeln!(
                f,
                "{}  (context: {}; {kind}{count})",
                signal.path(),
                signal.context()
            )?;
            for handler in handlers {
                writeln!(
                    f,
                    "    {:>priority_width$}  {:<name_width$}  {}:{}",
                    handler.priority(),
                    label(handler),
                    handler.file(),
                    handler.line(),
                )?;
            }
            for problem in signal.problems() {
                writeln!(f, "    ! {problem}")?;
            }
        }
        Ok(())
    }
}

/// What the catalog says of a signal without handlers: often a crate that nothing links.
pub(crate) const NO_HANDLERS: &str =
    "no handlers; if they are in another crate, link it with `use that_crate as _;`";

/// A handler's name as the catalog shows it: `async` before an async handler's, its filter, the
/// handlers it runs after and its queue after it.
fn label(handler: &HandlerInfo) -> String {
    let kind = if handler.is_async() { "async " } else { "" };
    let mut label = format!("{kind}{}", handler.name());
    if let Some(filter) = handler.filter() {
        label.push_str(&format!(" when {filter}"));
    }
    let after: Vec<&str> = handler.after().map(HandlerInfo::name).collect();
    if !after.is_empty() {
        label.push_str(&format!(" after {}", after.join(", ")));
    }
    if let Some(queue) = handler.queue() {
        label.push_str(&format!(" [queue {queue}]"));
    }
    if let Some(subject) = handler.publish() {
        label.push_str(&format!(" [publish {subject}]"));
    }
    label
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.signals()).finish()
    }
}

impl SignalInfo {
    /// Whether any handler reacts to the signal. Notifying a signal without handlers does
    /// nothing; with the `tracing` feature it logs a debug event.
    pub fn has_handlers(&self) -> bool {
        !index().slots_of(self).is_empty()
    }

    /// The signal's handlers in the order [`notify`](crate::notify) runs them.
    pub fn handlers(&self) -> Handlers {
        Handlers::new(index().slots_of(self))
    }

    /// The wiring problems that concern this signal (see [`check_order`]).
    pub fn problems(&self) -> impl Iterator<Item = &'static Problem> + '_ {
        let signal = self.type_id();
        index()
            .problems()
            .iter()
            .filter(move |p| p.concerns(signal))
    }
}

impl HandlerInfo {
    /// The signal this handler reacts to.
    pub fn signal(&self) -> &'static SignalInfo {
        index()
            .signal(self.signal)
            .expect("every handler's signal is registered")
    }

    /// The handlers of the same signal that this one runs after because of an `after` on it or
    /// a `before` on them (priorities aside).
    ///
    /// # Examples
    ///
    /// ```
    /// use signals_core::{on, Signal};
    ///
    /// #[derive(Signal)]
    /// pub struct OrderCreated;
    ///
    /// #[on(OrderCreated)]
    /// fn charge_card(_: &OrderCreated) {}
    ///
    /// #[on(OrderCreated, priority = 10, after = charge_card)]
    /// fn send_receipt(_: &OrderCreated) {}
    ///
    /// let receipt = signals_core::handlers::<OrderCreated>().last().unwrap();
    /// let after: Vec<&str> = receipt.after().map(|h| h.name()).collect();
    /// assert!(after[0].ends_with("::charge_card"));
    /// ```
    pub fn after(&self) -> impl Iterator<Item = &'static HandlerInfo> + '_ {
        index().after(self)
    }
}

/// The handlers of one signal in run order; see [`handlers`].
///
/// # Examples
///
/// ```
/// use signals_core::{on, Signal};
///
/// #[derive(Signal)]
/// pub struct Ping;
///
/// #[on(Ping)]
/// fn first(_: &Ping) {}
///
/// #[on(Ping, priority = -1)]
/// fn last(_: &Ping) {}
///
/// let names: Vec<&str> = signals_core::handlers::<Ping>().map(|h| h.name()).collect();
/// assert_eq!(names.len(), 2);
/// assert!(names[0].ends_with("::first") && names[1].ends_with("::last"));
/// ```
#[derive(Clone)]
pub struct Handlers {
    slots: std::slice::Iter<'static, Slot>,
}

impl Handlers {
    fn new(slots: &'static [Slot]) -> Self {
        Handlers {
            slots: slots.iter(),
        }
    }
}

impl Iterator for Handlers {
    type Item = &'static HandlerInfo;

    fn next(&mut self) -> Option<Self::Item> {
        self.slots.next().map(Slot::info)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl DoubleEndedIterator for Handlers {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.slots.next_back().map(Slot::info)
    }
}

impl ExactSizeIterator for Handlers {}

impl FusedIterator for Handlers {}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// Checks the program's wiring without waiting for a `notify` to find out: that every signal's
/// `after`/`before` constraints can hold together and name handlers of that signal, that no
/// function is registered twice for one signal, and that no two handler functions (or signal
/// types) share a full name. Call it in a test.
///
/// A signal whose order cannot hold cannot be notified (its `notify` returns the same problem
/// and runs no handler); every other signal works regardless.
///
/// # Errors
///
/// An [`OrderError`] listing every [`Problem`], each naming the handlers involved with their
/// `file:line`.
///
/// # Examples
///
/// ```
/// use signals_core::{on, Signal};
///
/// #[derive(Signal)]
/// pub struct OrderCreated;
///
/// #[on(OrderCreated)]
/// fn create_billing_record(_: &OrderCreated) {}
///
/// #[on(OrderCreated, after = create_billing_record)]
/// fn send_receipt(_: &OrderCreated) {}
///
/// signals_core::check_order()?;
/// # Ok::<(), signals_core::OrderError>(())
/// ```
pub fn check_order() -> Result<(), OrderError> {
    match index().problems() {
        [] => Ok(()),
        problems => Err(OrderError::new(problems.to_vec())),
    }
}
