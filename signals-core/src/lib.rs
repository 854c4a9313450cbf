//! Compile-time wired, in-process signals: `notify` is a loop over function pointers.
//!
//! (Crate docs are filled in below.)

#![forbid(unsafe_op_in_unsafe_fn)]

extern crate self as signals_core;

mod catalog;
mod dispatch;
mod error;
mod handler;
mod registry;
mod signal;

pub use crate::catalog::{catalog, handlers, Catalog, Signals};
pub use crate::dispatch::{notify, notify_all};
pub use crate::error::{Error, Failure};
pub use crate::handler::{BoxError, HandlerInfo, Handlers};
pub use crate::signal::{Signal, SignalInfo};
pub use signals_macros::{on, Signal};

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::handler::{into_handler_result, HandlerReturn};
    pub use crate::registry::{
        SIGNALS_CORE_0_1_HANDLERS as HANDLERS, SIGNALS_CORE_0_1_SIGNALS as SIGNALS,
    };
    pub use core::{concat, file, line, module_path};
    pub use linkme::{self, distributed_slice};
}
