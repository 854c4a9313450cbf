//! A framework that re-exports signals under its own path, as `#[signal(crate = ...)]` and
//! `#[on(..., crate = ...)]` are for.

pub use signals_core as signals;
