//! What `#[on]` records about each handler, and what a handler may return. The bottom layer:
//! plain records, no signal types (the typed side of a handler is in `signal.rs`).

use std::any::TypeId;
use std::fmt;

/// The error a failing handler returns, boxed: any `E: Into<BoxError>` converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler's thunk returns once its own return value is converted.
pub(crate) type HandlerResult = Result<(), BoxError>;

/// How many bytes of an async handler's future [`notify_async`](crate::notify_async) holds
/// inline. A larger future (or one aligned to more than 8 bytes) is boxed: one allocation per
/// call of that handler.
pub const INLINE_FUTURE_BYTES: usize = 512;

/// An async handler's future, type-erased: inline up to [`INLINE_FUTURE_BYTES`], boxed beyond.
#[doc(hidden)]
pub type HandlerFuture<'a> = stackfuture::StackFuture<'a, HandlerResult, INLINE_FUTURE_BYTES>;

/// A handler's typed thunk with its signal type erased, so that one table holds handlers of
/// every signal. `signal.rs` erases and restores it.
pub(crate) type ErasedThunk = unsafe fn();

/// One handler registered with `#[on]`: its name, priority and source location.
///
/// Get them in run order from [`handlers`](crate::handlers), [`SignalInfo::handlers`] or the
/// [`catalog`](crate::catalog); a failed [`notify`](crate::notify) names its handler through
/// [`Error::handler`](crate::Error::handler).
///
/// [`SignalInfo::handlers`]: crate::SignalInfo::handlers
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
    pub(crate) signal: TypeId,
    /// The handler function's own type: `after = f` and `before = f` name it, and two
    /// functions with the same name are told apart by it.
    pub(crate) function: TypeId,
    /// The full name, the filter and the file, as one `&'static str` split into a thin pointer
    /// and lengths: one relocation per handler, where three `&str`s took three.
    text: *const u8,
    pub(crate) thunk: ErasedThunk,
    /// The length of `text` (below [`QUEUE_LEN_SHIFT`]), the length of the queue's name (from
    /// it), [`QUEUED`] for a handler that runs later from a queue, [`ASYNC`] for an `async fn`.
    packed: u32,
    name_len: u16,
    filter_len: u16,
    priority: i32,
    line: u32,
}

/// The bit of `HandlerInfo::packed` that marks an async handler.
const ASYNC: u32 = 1 << 31;
/// The bit of `HandlerInfo::packed` that marks a queued handler.
const QUEUED: u32 = 1 << 30;
/// Where the queue name's length starts in `HandlerInfo::packed`: 8 bits, below [`QUEUED`].
const QUEUE_LEN_SHIFT: u32 = 22;
/// The bit of `HandlerInfo::packed` that marks a queued handler that publishes its return
/// value to a broker: its "queue" is the subject.
const PUBLISH: u32 = 1 << 21;
/// The mask of the text's length in `HandlerInfo::packed`.
const TEXT_LEN: u32 = PUBLISH - 1;

// SAFETY: `text` points into a `&'static str`, which is immutable and lives forever; every
// other field is `Send + Sync`.
unsafe impl Send for HandlerInfo {}
// SAFETY: as for `Send`.
unsafe impl Sync for HandlerInfo {}

/// Where a handler's `text` splits: the lengths of its full name, of its filter and of its
/// queue's name; the file follows.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct TextSplit {
    /// The length of the full name, at the start of `text`.
    pub name_len: usize,
    /// The length of the `when = ...` filter as written, after the name (0 without a filter).
    pub filter_len: usize,
    /// The length of the queue's name, after the filter (0 for a handler that is not queued).
    pub queue_len: usize,
}

/// Not public API. What `#[on]` records about a handler besides its thunk.
#[doc(hidden)]
pub struct HandlerSpec {
    /// The handler's full name, its filter, its queue and its file, one after another.
    pub text: &'static str,
    /// Where `text` splits.
    pub split: TextSplit,
    /// `priority = N`, or 0.
    pub priority: i32,
    /// The line of the `#[on]`.
    pub line: u32,
    /// The handler function's identity (`function_id(&handler)`).
    pub function: TypeId,
}

impl HandlerInfo {
    /// A handler record for the signal `signal`, from what `#[on]` wrote and the erased thunk.
    /// The typed constructors are in `signal.rs`, beside the restore.
    pub(crate) const fn new(
        spec: HandlerSpec,
        signal: TypeId,
        thunk: ErasedThunk,
        is_async: bool,
        queued: bool,
        publish: bool,
    ) -> Self {
        let HandlerSpec {
            text,
            split,
            priority,
            line,
            function,
        } = spec;
        let TextSplit {
            name_len,
            filter_len,
            queue_len,
        } = split;
        assert!(name_len <= u16::MAX as usize && filter_len <= u16::MAX as usize);
        assert!(
            queue_len <= u8::MAX as usize,
            "a queue's name is at most 255 bytes"
        );
        let file_start = name_len + filter_len + queue_len;
        assert!(file_start <= text.len() && text.len() <= TEXT_LEN as usize);
        assert!(text.is_char_boundary(name_len) && text.is_char_boundary(name_len + filter_len));
        assert!(text.is_char_boundary(file_start));
        let mut kind = (queue_len as u32) << QUEUE_LEN_SHIFT;
        if is_async {
            kind |= ASYNC;
        }
        if queued {
            kind |= QUEUED;
        }
        if publish {
            kind |= PUBLISH;
        }
        HandlerInfo {
            signal,
            function,
            text: text.as_ptr(),
            thunk,
            packed: text.len() as u32 | kind,
            name_len: name_len as u16,
            filter_len: filter_len as u16,
            priority,
            line,
        }
    }

    /// Whether the handler is an `async fn`.
    pub fn is_async(&self) -> bool {
        self.packed & ASYNC != 0
    }

    /// The queue of a handler declared `#[on(S, queue)]` (`"default"`) or `queue = "name"`:
    /// `notify` writes a job for it in the caller's transaction, and a worker runs it later.
    /// `None` for a handler that `notify` runs itself.
    pub fn queue(&self) -> Option<&'static str> {
        match self.packed & (QUEUED | PUBLISH) == QUEUED {
            true => Some(self.queue_text()),
            false => None,
        }
    }

    /// The subject of a handler declared `#[on(S, publish = "subject")]`: `notify` runs it and
    /// writes its return value as a job in the caller's transaction, and a relay publishes it to
    /// the broker after commit. `None` for other handlers.
    pub fn publish(&self) -> Option<&'static str> {
        match self.packed & PUBLISH != 0 {
            true => Some(self.queue_text()),
            false => None,
        }
    }

    /// Not public API. Whether `notify` writes a job for this handler (queued or publishing).
    #[doc(hidden)]
    pub fn __writes_job(&self) -> bool {
        self.packed & QUEUED != 0
    }

    /// The queue's name or the subject.
    fn queue_text(&self) -> &'static str {
        let start = (self.name_len + self.filter_len) as usize;
        &self.text()[start..start + self.queue_len()]
    }

    fn queue_len(&self) -> usize {
        ((self.packed & !(ASYNC | QUEUED)) >> QUEUE_LEN_SHIFT) as usize
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
        // SAFETY: `text` and the length in `packed` are those of the `&'static str`
        // given to `new`, which checked that it splits at char boundaries.
        unsafe {
            let len = self.packed & TEXT_LEN;
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
        &self.text()[(self.name_len + self.filter_len) as usize + self.queue_len()..]
    }

    /// The line of the handler's `#[on]` attribute in [`file`](Self::file).
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Not public API. The identity of the handler function (its item type's `TypeId`), for
    /// the queue rung.
    #[doc(hidden)]
    pub fn __function(&self) -> TypeId {
        self.function
    }

    /// Whether `self` and `other` are the same function (a function with `#[on(A)] #[on(B)]`
    /// has one record per signal).
    pub(crate) fn same_function(&self, other: &HandlerInfo) -> bool {
        self.function == other.function
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
    signal: &S,
    ctx: &C,
    filter: F,
) -> bool {
    filter.accepts(signal, ctx)
}
