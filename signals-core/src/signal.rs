//! The [`Signal`] trait and what `#[derive(Signal)]` records about each signal type.

use std::any::TypeId;
use std::fmt;
use std::sync::OnceLock;

use crate::handler::Handlers;
use crate::registry::{self, Slot};

/// A typed, in-process notification that handlers react to.
///
/// Implement it with `#[derive(Signal)]`, never by hand: the derive registers the type in the
/// program-wide catalog and ties it to the handler table that [`notify`](crate::notify) walks.
///
/// `Context<'c>` is what every handler of the signal receives besides the signal itself, chosen
/// with `#[signal(context = Type)]` (default `()`). The lifetime `'c` stands for whatever the
/// context borrows: `#[signal(context = AppCtx<'_>)]` becomes `type Context<'c> = AppCtx<'c>`.
///
/// # Safety
///
/// [`Signal::__info`] must return a `SignalInfo` made by `SignalInfo::__new::<Self>`, so that it
/// carries `Self`'s `TypeId`: handlers are stored type-erased and `notify::<Self>` calls those
/// filed under that `TypeId` with a `&Self`. `#[derive(Signal)]` guarantees this; implement the
/// trait only through it.
///
/// # Examples
///
/// ```
/// use signals_core::Signal;
///
/// pub struct AppCtx<'a> {
///     pub log: &'a mut Vec<String>,
/// }
///
/// #[derive(Signal)]
/// #[signal(context = AppCtx<'_>)]
/// pub struct OrderCreated {
///     pub order_id: u64,
/// }
///
/// #[derive(Signal)]
/// pub struct Ping;
///
/// fn context_of<S: Signal>() -> &'static str {
///     signals_core::catalog().get::<S>().context()
/// }
/// assert_eq!(context_of::<OrderCreated>(), "AppCtx<'_>");
/// assert_eq!(context_of::<Ping>(), "()");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a signal",
    label = "not a signal",
    note = "add `#[derive(Signal)]` to the definition of `{Self}`"
)]
pub unsafe trait Signal: 'static {
    /// What handlers receive besides the signal: `&Context` or `&mut Context`.
    type Context<'c>: ?Sized;

    /// Not public API. Used by generated code.
    #[doc(hidden)]
    fn __info() -> &'static SignalInfo;

    /// Not public API. The signal's `Debug` rendering if its type implements `Debug`; the test
    /// kit records it.
    #[doc(hidden)]
    #[inline]
    fn __debug(&self) -> Option<String> {
        None
    }
}

/// Not public API. Picks [`ViaDebug`] for `Debug` types and [`ViaFallback`] for the others when
/// called as `(&DebugProbe(value)).signals_debug()` in non-generic generated code.
#[doc(hidden)]
pub struct DebugProbe<'a, T: ?Sized>(pub &'a T);

/// Not public API. See [`DebugProbe`].
#[doc(hidden)]
pub trait ViaDebug {
    /// The value's `Debug` rendering.
    fn signals_debug(&self) -> Option<String>;
}

impl<T: ?Sized + std::fmt::Debug> ViaDebug for DebugProbe<'_, T> {
    fn signals_debug(&self) -> Option<String> {
        Some(format!("{:?}", self.0))
    }
}

/// Not public API. See [`DebugProbe`].
#[doc(hidden)]
pub trait ViaFallback {
    /// No rendering: the type does not implement `Debug`.
    fn signals_debug(&self) -> Option<String>;
}

impl<T: ?Sized> ViaFallback for &DebugProbe<'_, T> {
    fn signals_debug(&self) -> Option<String> {
        None
    }
}

/// A signal whose handlers are all synchronous: [`notify`](crate::notify) runs them.
///
/// `#[derive(Signal)]` implements it unless the signal is declared `#[signal(asynchronous)]`.
///
/// # Safety
///
/// A type must not implement both `SyncSignal` and [`AsyncSignal`]: `notify` calls every
/// handler of a `SyncSignal` as a synchronous function. Implement it only through the derive.
#[diagnostic::on_unimplemented(
    message = "`{Self}` can't be notified with `notify`",
    label = "not a synchronous signal",
    note = "a signal declared `#[signal(asynchronous)]` is notified with `notify_async(...).await`; any other type needs `#[derive(Signal)]`"
)]
pub unsafe trait SyncSignal: Signal {}

/// A signal declared `#[signal(asynchronous)]`: it may have `async fn` handlers, and is notified
/// with [`notify_async`](crate::notify_async).
///
/// # Safety
///
/// As for [`SyncSignal`]: never both. Implement it only through the derive.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an asynchronous signal",
    label = "`async fn` handlers need an asynchronous signal",
    note = "declare it with `#[signal(asynchronous)]` and notify it with `notify_async(...).await`"
)]
pub unsafe trait AsyncSignal: Signal {}

/// What the program knows about one signal type: its path, its context type and its handlers.
///
/// One `SignalInfo` exists per signal type, created by `#[derive(Signal)]`. Reach it through
/// [`catalog()`](crate::catalog) or [`Catalog::get`](crate::Catalog::get).
///
/// # Examples
///
/// ```
/// use signals_core::{catalog, Signal};
///
/// #[derive(Signal)]
/// pub struct Ping;
///
/// let info = catalog().get::<Ping>();
/// assert_eq!(info.name(), "Ping");
/// assert!(info.path().ends_with("::Ping"));
/// assert_eq!(info.handlers().len(), 0);
/// ```
pub struct SignalInfo {
    type_id: TypeId,
    /// The path, the context type and the file, one after another: one string is one
    /// relocation in a position-independent binary, where three would be three.
    text: &'static str,
    path_len: u32,
    context_len: u32,
    line: u32,
    asynchronous: bool,
    slots: OnceLock<&'static [Slot]>,
}

impl SignalInfo {
    /// Not public API. Used by generated code.
    ///
    /// `text` is the path, the context type and the file concatenated; `path_len` and
    /// `context_len` say where they split.
    #[doc(hidden)]
    pub const fn __new<S: 'static>(
        text: &'static str,
        path_len: usize,
        context_len: usize,
        line: u32,
        asynchronous: bool,
    ) -> Self {
        assert!(path_len + context_len <= text.len() && text.len() <= u32::MAX as usize);
        SignalInfo {
            type_id: TypeId::of::<S>(),
            text,
            path_len: path_len as u32,
            context_len: context_len as u32,
            line,
            asynchronous,
            slots: OnceLock::new(),
        }
    }

    /// Whether the signal is declared `#[signal(asynchronous)]`: it may have `async fn`
    /// handlers and is notified with [`notify_async`](crate::notify_async).
    pub fn is_async(&self) -> bool {
        self.asynchronous
    }

    /// The full path of the signal type: `module_path!()` of its definition, `::`, its name.
    pub fn path(&self) -> &'static str {
        &self.text[..self.path_len as usize]
    }

    /// The name of the signal type, without its module path.
    pub fn name(&self) -> &'static str {
        let path = self.path();
        path.rsplit("::").next().unwrap_or(path)
    }

    /// The context type as written in `#[signal(context = ...)]`, or `()`.
    pub fn context(&self) -> &'static str {
        let start = self.path_len as usize;
        &self.text[start..start + self.context_len as usize]
    }

    /// The source file that defines the signal type.
    pub fn file(&self) -> &'static str {
        &self.text[(self.path_len + self.context_len) as usize..]
    }

    /// The line of the signal type's `#[derive(Signal)]` in [`file`](Self::file).
    pub fn line(&self) -> u32 {
        self.line
    }

    pub(crate) fn type_id(&self) -> TypeId {
        self.type_id
    }

    /// Whether any handler reacts to the signal. Notifying a signal without handlers does
    /// nothing; with the `tracing` feature it logs a debug event.
    pub fn has_handlers(&'static self) -> bool {
        !self.slots().is_empty()
    }

    /// The signal's handlers in the order [`notify`](crate::notify) runs them.
    pub fn handlers(&'static self) -> Handlers {
        Handlers::new(self.slots())
    }

    /// The handler table, built at the first call for any signal and cached per signal.
    #[inline]
    pub(crate) fn slots(&'static self) -> &'static [Slot] {
        match self.slots.get() {
            Some(slots) => slots,
            None => self.init_slots(),
        }
    }

    #[cold]
    #[inline(never)]
    fn init_slots(&'static self) -> &'static [Slot] {
        self.slots.get_or_init(|| registry::index().slots_of(self))
    }
}

impl fmt::Debug for SignalInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalInfo")
            .field("path", &self.path())
            .field("context", &self.context())
            .field("file", &self.file())
            .field("line", &self.line)
            .field("is_async", &self.asynchronous)
            .finish_non_exhaustive()
    }
}
