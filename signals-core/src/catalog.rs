//! The catalog: every signal linked into the program and who reacts to it.

use std::fmt;

use crate::handler::{HandlerInfo, Handlers};
use crate::registry;
use crate::signal::{Signal, SignalInfo};

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
        signals: registry::index().signals(),
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
    /// One line per signal, then one line per handler: priority, full name, `file:line`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all_handlers = || self.signals().flat_map(SignalInfo::handlers);
        let name_width = all_handlers().map(|h| label(h).len()).max().unwrap_or(0);
        let priority_width = all_handlers()
            .map(|h| h.priority().to_string().len())
            .max()
            .unwrap_or(1);
        for signal in self.signals() {
            let handlers = signal.handlers();
            let count = match handlers.len() {
                0 => "no handlers".to_owned(),
                1 => "1 handler".to_owned(),
                n => format!("{n} handlers"),
            };
            let kind = if signal.is_async() {
                "asynchronous; "
            } else {
                ""
            };
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
        }
        Ok(())
    }
}

/// A handler's name as the catalog shows it: `async` before an async handler's, its filter
/// after it.
fn label(handler: &HandlerInfo) -> String {
    let kind = if handler.is_async() { "async " } else { "" };
    match handler.filter() {
        Some(filter) => format!("{kind}{} when {filter}", handler.name()),
        None => format!("{kind}{}", handler.name()),
    }
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.signals()).finish()
    }
}
