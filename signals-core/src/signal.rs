//! The [`Signal`] trait, what `#[derive(Signal)]` records about each signal type, and the typed
//! side of a handler: its thunk, erased into a [`HandlerInfo`] and restored for `notify`, side by
//! side, with the one safety argument they share.

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use crate::handler::{ErasedThunk, HandlerFuture, HandlerInfo, HandlerResult, HandlerSpec};

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
/// filed under that `TypeId` with a `&Self`. [`Signal::__table`] must return a static that no
/// other type's `__table` returns, since it caches `Self`'s handlers. `#[derive(Signal)]`
/// guarantees both; implement the trait only through it.
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

    /// Not public API. [`SyncKind`] or [`AsyncKind`]: how the queue rung writes the jobs of the
    /// signal's queued handlers (in `notify`, or awaited in `notify_async`).
    #[doc(hidden)]
    type __Kind;

    /// Not public API. Used by generated code.
    #[doc(hidden)]
    fn __info() -> &'static SignalInfo;

    /// Not public API. The cache of this signal's handler table: a static of its own, next to
    /// `__info`'s record (which lives in a linker section and is never written).
    #[doc(hidden)]
    fn __table() -> &'static SignalTable;

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
    note = "declare it with `#[derive(Signal)]` and `#[signal(asynchronous)]`, and notify it with `notify_async(...).await`"
)]
pub unsafe trait AsyncSignal: Signal {}

/// What the program knows about one signal type: its path, its context type and its handlers.
///
/// One `SignalInfo` exists per signal type, created by `#[derive(Signal)]` as an immutable
/// record in the program's table of signals. Reach it through [`catalog()`](crate::catalog) or
/// [`Catalog::get`](crate::Catalog::get).
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
    schedule_len: u32,
    line: u32,
    asynchronous: bool,
}

impl SignalInfo {
    /// Not public API. Used by generated code.
    ///
    /// `text` is the path, the context type, the schedule and the file concatenated;
    /// `path_len`, `context_len` and `schedule_len` say where they split.
    #[doc(hidden)]
    pub const fn __new<S: 'static>(
        text: &'static str,
        path_len: usize,
        context_len: usize,
        schedule_len: usize,
        line: u32,
        asynchronous: bool,
    ) -> Self {
        assert!(
            path_len + context_len + schedule_len <= text.len() && text.len() <= u32::MAX as usize
        );
        SignalInfo {
            type_id: TypeId::of::<S>(),
            text,
            path_len: path_len as u32,
            context_len: context_len as u32,
            schedule_len: schedule_len as u32,
            line,
            asynchronous,
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

    /// A periodic signal's schedule, as `#[signal(every = ...)]` or `#[signal(cron = ...)]`
    /// gave it: `every 1h`, `cron 0 3 * * * UTC` (the pattern, then its time zone); `None` for
    /// a signal that only `notify` sends. The queue's leader fires it (see `signals-queue`).
    pub fn schedule(&self) -> Option<&'static str> {
        let start = (self.path_len + self.context_len) as usize;
        let schedule = &self.text[start..start + self.schedule_len as usize];
        (!schedule.is_empty()).then_some(schedule)
    }

    /// The source file that defines the signal type.
    pub fn file(&self) -> &'static str {
        &self.text[(self.path_len + self.context_len + self.schedule_len) as usize..]
    }

    /// The line of the signal type's `#[derive(Signal)]` in [`file`](Self::file).
    pub fn line(&self) -> u32 {
        self.line
    }

    pub(crate) fn type_id(&self) -> TypeId {
        self.type_id
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

/// The typed thunk `#[on]` generates for a handler of `S`: it adapts the handler's shape
/// (with or without context, `&` or `&mut`, `()` or `Result`) to one signature.
pub type Thunk<S> = for<'s, 'x, 'c> fn(&'s S, &'x mut <S as Signal>::Context<'c>) -> HandlerResult;

/// The typed thunk `#[on]` generates for an `async fn` handler of `S`: it starts the handler and
/// returns its future, stored inline when it fits (see [`HandlerFuture`]).
pub type AsyncThunk<S> =
    for<'s, 'c> fn(&'s S, &'s mut <S as Signal>::Context<'c>) -> HandlerFuture<'s>;

// Erasing and restoring a thunk. The one safety argument: a `HandlerInfo` made by
// `handler_info::<S>` (or `async_handler_info::<S>`) records `S`'s `TypeId` and whether it is
// async beside the erased thunk; the index files every handler under that `TypeId`, so the slots in `S::__table()` are
// exactly the handlers made for this `S` (the `Signal` contract ties `S::__info()` to `S`'s
// `TypeId` and `S::__table()` to `S` alone). `Slot::thunk::<S>` restores a sync thunk and
// `Slot::async_thunk::<S>` an async one; `notify` asks `is_async` before choosing, or knows the
// answer because `S: SyncSignal` (async handlers require `AsyncSignal`, and no signal is both).

/// Not public API. Used by generated code: the record of a handler of `S`.
#[doc(hidden)]
pub const fn handler_info<S: Signal>(spec: HandlerSpec, thunk: Thunk<S>) -> HandlerInfo {
    // SAFETY: both are plain function pointers of the same size; see "Erasing and restoring a
    // thunk" above for when it is turned back.
    let thunk = unsafe { std::mem::transmute::<Thunk<S>, ErasedThunk>(thunk) };
    HandlerInfo::new(spec, TypeId::of::<S>(), thunk, false, false, false)
}

/// Not public API. Used by generated code: the record of an `async fn` handler of `S`.
#[doc(hidden)]
pub const fn async_handler_info<S: AsyncSignal>(
    spec: HandlerSpec,
    thunk: AsyncThunk<S>,
) -> HandlerInfo {
    // SAFETY: as in `handler_info`.
    let thunk = unsafe { std::mem::transmute::<AsyncThunk<S>, ErasedThunk>(thunk) };
    HandlerInfo::new(spec, TypeId::of::<S>(), thunk, true, false, false)
}

/// Not public API. The `Signal::__Kind` of a signal notified with `notify`.
#[doc(hidden)]
pub enum SyncKind {}

/// Not public API. The `Signal::__Kind` of a signal declared `#[signal(asynchronous)]`.
#[doc(hidden)]
pub enum AsyncKind {}

/// Not public API. What `notify` runs in place of a queued handler: a sync thunk for a
/// [`SyncSignal`], an async one for an [`AsyncSignal`] (the queue rung picks by `S::__Kind`).
///
/// Its fields are private and each constructor requires its signal kind, so an async thunk for
/// a signal `notify` calls synchronously cannot be expressed, not even through this hidden API.
#[doc(hidden)]
pub struct QueuedThunk<S: Signal> {
    thunk: ErasedThunk,
    asynchronous: bool,
    signal: PhantomData<fn(&S)>,
}

impl<S: SyncSignal> QueuedThunk<S> {
    /// Not public API. Writes the job synchronously, in `notify`.
    pub const fn sync(thunk: Thunk<S>) -> Self {
        QueuedThunk {
            // SAFETY: as in `handler_info`.
            thunk: unsafe { std::mem::transmute::<Thunk<S>, ErasedThunk>(thunk) },
            asynchronous: false,
            signal: PhantomData,
        }
    }
}

impl<S: AsyncSignal> QueuedThunk<S> {
    /// Not public API. Writes the job in a future `notify_async` awaits.
    pub const fn asynchronous(thunk: AsyncThunk<S>) -> Self {
        QueuedThunk {
            // SAFETY: as in `async_handler_info`.
            thunk: unsafe { std::mem::transmute::<AsyncThunk<S>, ErasedThunk>(thunk) },
            asynchronous: true,
            signal: PhantomData,
        }
    }
}

/// Not public API. Used by the queue rung's generated code: the record of a handler of `S` that
/// runs later from a queue (or, if `publish`, whose message a relay publishes later); `thunk` is
/// what `notify` runs in its place, which writes the job.
#[doc(hidden)]
pub const fn queued_handler_info<S: Signal>(
    spec: HandlerSpec,
    thunk: QueuedThunk<S>,
    publish: bool,
) -> HandlerInfo {
    // A sync thunk was made for a `SyncSignal`, an async one for an `AsyncSignal` (the only
    // constructors of `QueuedThunk` say so), and the record says which.
    let QueuedThunk {
        thunk,
        asynchronous,
        ..
    } = thunk;
    HandlerInfo::new(spec, TypeId::of::<S>(), thunk, asynchronous, true, publish)
}

/// A handler as `notify` sees it: the type-erased thunk beside its `HandlerInfo`.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    thunk: ErasedThunk,
    info: &'static HandlerInfo,
}

impl Slot {
    pub(crate) fn new(info: &'static HandlerInfo) -> Self {
        Slot {
            thunk: info.thunk,
            info,
        }
    }

    pub(crate) fn info(&self) -> &'static HandlerInfo {
        self.info
    }

    /// The handler's thunk with its signal type restored.
    ///
    /// # Safety
    ///
    /// The slot must come from `S::__table()`, and the handler must be synchronous: true for
    /// every slot of a `SyncSignal`, otherwise check `info().is_async()` (see "Erasing and
    /// restoring a thunk").
    #[inline]
    pub(crate) unsafe fn thunk<S: Signal>(&self) -> Thunk<S> {
        debug_assert!(self.info.signal == TypeId::of::<S>() && !self.info.is_async());
        // SAFETY: the caller guarantees `self.thunk` was made from a `Thunk<S>` of this `S`.
        unsafe { std::mem::transmute::<ErasedThunk, Thunk<S>>(self.thunk) }
    }

    /// The async handler's thunk with its signal type restored.
    ///
    /// # Safety
    ///
    /// As for [`Slot::thunk`], but the handler must be async (`info().is_async()`).
    #[inline]
    pub(crate) unsafe fn async_thunk<S: Signal>(&self) -> AsyncThunk<S> {
        debug_assert!(self.info.signal == TypeId::of::<S>() && self.info.is_async());
        // SAFETY: the caller guarantees `self.thunk` was made from an `AsyncThunk<S>`.
        unsafe { std::mem::transmute::<ErasedThunk, AsyncThunk<S>>(self.thunk) }
    }
}

/// Not public API. One signal's handlers in run order, cached at its first `notify`.
///
/// `#[derive(Signal)]` puts one in a static of its own beside the signal's `SignalInfo`; only
/// the signal's `Signal::__table` names it.
#[doc(hidden)]
pub struct SignalTable {
    slots: OnceLock<&'static [Slot]>,
}

impl SignalTable {
    /// Not public API. An empty cache.
    #[doc(hidden)]
    #[allow(clippy::new_without_default)] // a `const fn` for statics; nobody needs `Default`
    pub const fn new() -> Self {
        SignalTable {
            slots: OnceLock::new(),
        }
    }

    /// The cached handlers, once the index has filled them in.
    #[inline]
    pub(crate) fn get(&self) -> Option<&'static [Slot]> {
        self.slots.get().copied()
    }

    /// Caches `slots` (or keeps what another thread cached first: the same slice).
    pub(crate) fn fill(&self, slots: &'static [Slot]) -> &'static [Slot] {
        self.slots.get_or_init(|| slots)
    }
}
