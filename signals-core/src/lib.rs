//! Compile-time wired, in-process signals: `notify` is a loop over function pointers.
//!
//! A **signal** is a typed record of something that happened. Functions marked `#[on(Signal)]`
//! react to it, in any crate linked into the program. [`notify`] runs them in a fixed order, in
//! the caller's thread and call stack, with a context the caller passes (typically its open
//! transaction), and returns the first error. The macros put every handler into a static table
//! at link time: no registration call, no start-up code, no allocation, no hashing.
//!
//! ```toml
//! [dependencies]
//! # Not on crates.io yet: point `path` at a checkout of this repository.
//! signals-core = { path = "../signals/signals-core" }
//! ```
//!
//! # Example
//!
//! ```
//! use signals_core::{notify, on, Signal};
//!
//! /// What every handler receives: here, the caller's audit log, borrowed.
//! pub struct AppCtx<'a> {
//!     pub audit: &'a mut Vec<String>,
//! }
//!
//! #[derive(Signal)]
//! #[signal(context = AppCtx<'_>)]
//! pub struct OrderCreated {
//!     pub order_id: u64,
//! }
//!
//! #[on(OrderCreated, priority = 10)]
//! fn create_billing_record(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> Result<(), std::io::Error> {
//!     ctx.audit.push(format!("billed order {}", sig.order_id));
//!     Ok(())
//! }
//!
//! #[on(OrderCreated)]
//! fn write_audit_log(sig: &OrderCreated, ctx: &mut AppCtx<'_>) {
//!     ctx.audit.push(format!("order {} created", sig.order_id));
//! }
//!
//! let mut audit = Vec::new();
//! notify(&OrderCreated { order_id: 7 }, &mut AppCtx { audit: &mut audit })?;
//! assert_eq!(audit, ["billed order 7", "order 7 created"]);
//! # Ok::<(), signals_core::Error>(())
//! ```
//!
//! Handlers take `&S`, optionally `&Ctx` or `&mut Ctx`, and return `()` or `Result<(), E>` for
//! any `E` that converts into [`BoxError`]. Higher `priority` runs first; equal priorities run in
//! ascending order of the handler's full path. [`notify_all`] runs every handler even when some
//! fail. [`catalog`] lists every signal and its handlers.
//!
//! For async code, declare the signal `#[signal(asynchronous)]`, write `async fn` handlers next
//! to sync ones, and call [`notify_async`]`(&signal, &mut ctx).await`.
//!
//! `#[on(S, when = filter)]` runs a handler only when `filter` accepts the signal;
//! `#[on(S, after = other)]` and `before = other` order it relative to another handler of `S`
//! (see [`check_order`]).
//!
//! # Features
//!
//! - `tracing`: a span per notify and per handler, failures logged with their error.
//! - `serde`: `Serialize` for the [`Catalog`]; [`Catalog::to_mermaid`] needs no feature.
//! - `testing`: the `testing` module (recorders, `assert_wired`, muting), for dev-dependencies.
//! - `backend-inventory`: register through constructors on every target (see Limitations).
//!
//! With every feature off (the default), `notify` is the loop described below and nothing else.
//!
//! # How it works
//!
//! `#[derive(Signal)]` and `#[on]` each emit a `static` into a [linkme] distributed slice: the
//! linker gathers the elements of every crate into one array, so the tables exist in the binary
//! image and nothing runs at start-up. The first `notify` of any signal sorts all handlers once
//! (O(H log H) in the number of handlers); every signal then caches its own run of that array.
//! From then on `notify` reads the cache and calls each function pointer.
//!
//! [linkme]: https://docs.rs/linkme
//!
//! # Limitations
//!
//! - A crate that nothing in the program references is not linked, and its handlers are not
//!   registered: name it once, with `use my_handlers as _;`.
//! - Targets linkme supports (Linux, macOS, Windows, the BSDs, illumos, Android, iOS, bare metal)
//!   register through linker sections; others (wasm) through constructors (`inventory`), which
//!   run at start-up. The `backend-inventory` feature forces the latter.
//! - Handlers are free functions; signals are non-generic types; each signal has one context
//!   type; handlers cannot be added or removed at run time.
//! - `async fn` handlers need a signal declared `#[signal(asynchronous)]`, notified with
//!   [`notify_async`]; their futures must be `Send`.
//!
//! # Mistakes do not compile
//!
//! A handler must take the signal by reference, and the error says so at the parameter:
//!
//! ```compile_fail
//! use signals_core::{on, Signal};
//!
//! #[derive(Signal)]
//! pub struct OrderCreated;
//!
//! #[on(OrderCreated)]
//! fn handler(signal: OrderCreated) {} // error: `#[on]` handler takes the signal by reference: `&OrderCreated`
//! ```
//!
//! And only signals have handlers:
//!
//! ```compile_fail
//! pub struct OrderCreated;
//!
//! #[signals_core::on(OrderCreated)] // error: `OrderCreated` is not a signal
//! fn handler(signal: &OrderCreated) {}
//! ```

extern crate self as signals_core;

// Layers, each importing only from those above it in this list: `handler` (records) ←
// `signal` (traits, the signal record, typed thunks: erase and restore) ← `order` (constraints,
// topological sort, problems) ← `tables` (link-time tables) ← `index` (built at first use) ←
// `dispatch`, `catalog`, `error`, `export`, `testing`, `trace`.
mod catalog;
mod dispatch;
mod error;
mod export;
mod handler;
mod index;
mod order;
mod signal;
mod tables;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;

pub use crate::catalog::{catalog, check_order, handlers, Catalog, Handlers, Signals};
pub use crate::dispatch::{notify, notify_all, notify_all_async, notify_async};
pub use crate::error::{Error, Failure};
pub use crate::handler::{BoxError, HandlerInfo, INLINE_FUTURE_BYTES};
pub use crate::order::{OrderError, Problem};
pub use crate::signal::{AsyncSignal, Signal, SignalInfo, SyncSignal};
pub use signals_macros::{on, Signal};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::handler::BoxError;
    pub use crate::handler::{
        accepts, into_handler_result, Filter, HandlerFuture, HandlerReturn, HandlerSpec, TextSplit,
    };
    pub use crate::order::{function_id, handler_id, HandlerOf, OrderConstraint};
    pub use crate::signal::{
        async_handler_info, handler_info, queued_handler_info, AsyncKind, AsyncThunk, DebugProbe,
        QueuedThunk, SignalTable, SyncKind, Thunk, ViaDebug, ViaFallback,
    };
    #[cfg(signals_inventory)]
    pub use crate::tables::SignalRegistration;
    #[cfg(not(signals_inventory))]
    pub use crate::tables::{
        SIGNALS_CORE_0_1_HANDLERS as HANDLERS, SIGNALS_CORE_0_1_ORDER as ORDER,
        SIGNALS_CORE_0_1_SIGNALS as SIGNALS,
    };
    pub use crate::Signal;
    pub use crate::{__signals_register as register, __signals_register_signal as register_signal};
    pub use core::result::Result::{self, Ok};
    pub use core::{concat, file, line, module_path};
    pub use inventory;
    pub use linkme::{self, distributed_slice};
    pub use std::option::Option;
    pub use std::string::String;
}
