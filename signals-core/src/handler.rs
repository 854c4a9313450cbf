//! What `#[on]` records about each handler, and the type-erased call it stores.

use std::any::TypeId;
use std::fmt;
use std::iter::FusedIterator;

use crate::registry::{self, Slot};
use crate::signal::{AsyncSignal, Signal, SignalInfo};

/// The error a failing handler returns, boxed: any `E: Into<BoxError>` converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler's thunk returns once its own return value is converted.
pub(crate) type HandlerResult = Result<(), BoxError>;

/// The typed thunk `#[on]` generates for a handler of `S`: it adapts the handler's shape
/// (with or without context, `&` or `&mut`, `()` or `Result`) to one signature.
pub(crate) type Thunk<S> =
    for<'s, 'x, 'c> fn(&'s S, &'x mut <S as Signal>::Context<'c>) -> HandlerResult;

/// The typed thunk `#[on]` generates for an `async fn` handler of `S`: it starts the handler and
/// returns its future, stored inline when it fits (see [`HandlerFuture`]).
pub(crate) type AsyncThunk<S> =
    for<'s, 'c> fn(&'s S, &'s mut <S as Signal>::Context<'c>) -> HandlerFuture<'s>;

/// How many bytes of an async handler's future [`notify_async`](crate::notify_async) holds
/// inline. A larger future (or one aligned to more than 8 bytes) is boxed: one allocation per
/// call of that handler.
pub const INLINE_FUTURE_BYTES: usize = 512;

/// An async handler's future, type-erased: inline up to [`INLINE_FUTURE_BYTES`], boxed beyond.
#[doc(hidden)]
pub type HandlerFuture<'a> = stackfuture::StackFuture<'a, HandlerResult, INLINE_FUTURE_BYTES>;

/// A [`Thunk`] or [`AsyncThunk`] with its signal type erased, so that one table holds handlers
/// of every signal.
pub(crate) type ErasedThunk = unsafe fn();

/// One handler registered with `#[on]`: its name, priority and source location.
///
/// Get them in run order from [`handlers`](crate::handlers), [`SignalInfo::handlers`] or the
/// [`catalog`](crate::catalog); a failed [`notify`](crate::notify) names its handler through
/// [`Error::handler`](crate::Error::handler).
///
/// # Examples
///
/// ```
/// use signals_core::{on, Signal};
///
/// #[derive(Signal)]
/// pub struct Ping;
///
/// #[on(Ping, priority = 5)]
/// fn pong(_: &Ping) {}
///
/// let handler = signals_core::handlers::<Ping>().next().unwrap();
/// assert!(handler.name().ends_with("::pong"));
/// assert_eq!(handler.priority(), 5);
/// assert_eq!(handler.signal().name(), "Ping");
/// assert!(handler.line() > 0);
/// ```
pub struct HandlerInfo {
    /// The signal this handler reacts to.
    signal: TypeId,
    /// The full name, the filter and the file, as one `&'static str` split into a thin pointer
    /// and lengths: one relocation and 48 bytes per handler, where three `&str`s took three
    /// and 80.
    text: *const u8,
    thunk: ErasedThunk,
    /// The length of `text`, with [`ASYNC`] set for an `async fn` handler.
    text_len_and_kind: u32,
    name_len: u16,
    filter_len: u16,
    priority: i32,
    line: u32,
}

/// The bit of `HandlerInfo::text_len_and_kind` that marks an async handler.
const ASYNC: u32 = 1 << 31;

// SAFETY: `text` points into a `&'static str`, which is immutable and lives forever; every
// other field is `Send + Sync`.
unsafe impl Send for HandlerInfo {}
// SAFETY: as for `Send`.
unsafe impl Sync for HandlerInfo {}

/// Where a handler's `text` splits: the lengths of its full name and of its filter's path.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct TextSplit {
    /// The length of the full name, at the start of `text`.
    pub name_len: usize,
    /// The length of the `when = ...` filter's path, after the name (0 without a filter).
    pub filter_len: usize,
}

impl HandlerInfo {
    /// Not public API. Used by generated code.
    ///
    /// `text` is the handler's full name, its filter's path and its file, split by `split`.
    #[doc(hidden)]
    pub const fn __new<S: Signal>(
        text: &'static str,
        split: TextSplit,
        priority: i32,
        line: u32,
        thunk: Thunk<S>,
    ) -> Self {
        // SAFETY: both are plain function pointers of the same size. The pointer is only
        // called after `Slot::thunk::<S>` turns it back into `Thunk<S>`, for the `S` whose
        // `TypeId` is `signal`, and only while `is_async` is false (see `Slot::thunk`).
        let thunk = unsafe { std::mem::transmute::<Thunk<S>, ErasedThunk>(thunk) };
        Self::erased::<S>(text, split, priority, line, thunk, 0)
    }

    /// Not public API. Used by generated code for `async fn` handlers.
    #[doc(hidden)]
    pub const fn __new_async<S: AsyncSignal>(
        text: &'static str,
        split: TextSplit,
        priority: i32,
        line: u32,
        thunk: AsyncThunk<S>,
    ) -> Self {
        // SAFETY: as in `__new`, with `Slot::async_thunk::<S>` and `is_async` true.
        let thunk = unsafe { std::mem::transmute::<AsyncThunk<S>, ErasedThunk>(thunk) };
        Self::erased::<S>(text, split, priority, line, thunk, ASYNC)
    }

    const fn erased<S: Signal>(
        text: &'static str,
        split: TextSplit,
        priority: i32,
        line: u32,
        thunk: ErasedThunk,
        kind: u32,
    ) -> Self {
        let TextSplit {
            name_len,
            filter_len,
        } = split;
        assert!(name_len <= u16::MAX as usize && filter_len <= u16::MAX as usize);
        assert!(name_len + filter_len <= text.len() && text.len() < ASYNC as usize);
        assert!(text.is_char_boundary(name_len) && text.is_char_boundary(name_len + filter_len));
        HandlerInfo {
            signal: TypeId::of::<S>(),
            text: text.as_ptr(),
            thunk,
            text_len_and_kind: text.len() as u32 | kind,
            name_len: name_len as u16,
            filter_len: filter_len as u16,
            priority,
            line,
        }
    }

    /// Whether the handler is an `async fn`.
    pub fn is_async(&self) -> bool {
        self.text_len_and_kind & ASYNC != 0
    }

    /// The handler's full path: `module_path!()` of its definition, `::`, the function's name.
    pub fn name(&self) -> &'static str {
        &self.text()[..self.name_len as usize]
    }

    /// The filter of `#[on(.., when = filter)]` as written, if the handler has one: the handler
    /// runs only for signals (and contexts) the filter accepts.
    pub fn filter(&self) -> Option<&'static str> {
        let start = self.name_len as usize;
        let filter = &self.text()[start..start + self.filter_len as usize];
        (!filter.is_empty()).then_some(filter)
    }

    fn text(&self) -> &'static str {
        // SAFETY: `text` and the length in `text_len_and_kind` are those of the `&'static str`
        // given to `__new`, which `erased` checked splits at char boundaries.
        unsafe {
            let len = self.text_len_and_kind & !ASYNC;
            let bytes = std::slice::from_raw_parts(self.text, len as usize);
            std::str::from_utf8_unchecked(bytes)
        }
    }

    /// The handler's priority: higher runs first; equal priorities run in order of [`name`](Self::name).
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The source file that defines the handler.
    pub fn file(&self) -> &'static str {
        &self.text()[(self.name_len + self.filter_len) as usize..]
    }

    /// The line of the handler's `#[on]` attribute in [`file`](Self::file).
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The signal this handler reacts to.
    pub fn signal(&self) -> &'static SignalInfo {
        registry::index().signal(self.signal)
    }

    pub(crate) fn signal_type_id(&self) -> TypeId {
        self.signal
    }

    pub(crate) fn erased_thunk(&self) -> ErasedThunk {
        self.thunk
    }
}

impl fmt::Debug for HandlerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerInfo")
            .field("name", &self.name())
            .field("priority", &self.priority)
            .field("file", &self.file())
            .field("line", &self.line)
            .field("is_async", &self.is_async())
            .finish_non_exhaustive()
    }
}

/// The handlers of one signal in run order; see [`handlers`](crate::handlers).
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
    pub(crate) fn new(slots: &'static [Slot]) -> Self {
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

/// What a handler may return: `()` or `Result<(), E>` with `E: Into<BoxError>`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`#[on]` handler must return `()` or `Result<(), E>`, not `{Self}`",
    label = "expected `()` or `Result<(), E>`",
    note = "`E` must convert into `Box<dyn std::error::Error + Send + Sync>`: any error type, `Box<dyn Error + Send + Sync>` or `anyhow::Error`"
)]
pub trait HandlerReturn {
    /// Converts the handler's return value into the result `notify` inspects.
    fn into_handler_result(self) -> HandlerResult;
}

impl HandlerReturn for () {
    #[inline]
    fn into_handler_result(self) -> HandlerResult {
        Ok(())
    }
}

impl<E: Into<BoxError>> HandlerReturn for Result<(), E> {
    #[inline]
    fn into_handler_result(self) -> HandlerResult {
        self.map_err(Into::into)
    }
}

/// Not public API. Used by generated code: converts a handler's return value.
#[doc(hidden)]
#[inline]
pub fn into_handler_result<R: HandlerReturn>(returned: R) -> Result<(), BoxError> {
    returned.into_handler_result()
}

/// A `when = ...` filter of a handler of `S` with context `C`: `fn(&S) -> bool` or
/// `fn(&S, &C) -> bool` (or a closure of that shape). `Shape` tells the two apart.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`when` expects a function `fn(&{S}) -> bool` or `fn(&{S}, &{C}) -> bool`",
    label = "not a filter of `{S}`"
)]
pub trait Filter<S, C: ?Sized, Shape> {
    /// Whether the handler should run.
    fn accepts(&self, signal: &S, ctx: &C) -> bool;
}

/// The [`Filter`] shape `fn(&S) -> bool`.
#[doc(hidden)]
pub enum SignalOnly {}

/// The [`Filter`] shape `fn(&S, &C) -> bool`.
#[doc(hidden)]
pub enum WithContext {}

impl<S, C: ?Sized, F: Fn(&S) -> bool> Filter<S, C, SignalOnly> for F {
    #[inline]
    fn accepts(&self, signal: &S, _: &C) -> bool {
        self(signal)
    }
}

impl<S, C: ?Sized, F: Fn(&S, &C) -> bool> Filter<S, C, WithContext> for F {
    #[inline]
    fn accepts(&self, signal: &S, ctx: &C) -> bool {
        self(signal, ctx)
    }
}

/// Not public API. Used by generated code: asks a `when = ...` filter.
#[doc(hidden)]
#[inline]
pub fn accepts<S, C: ?Sized, Shape, F: Filter<S, C, Shape>>(
    filter: F,
    signal: &S,
    ctx: &C,
) -> bool {
    filter.accepts(signal, ctx)
}
