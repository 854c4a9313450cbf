//! Runnable examples of `signals-core`; see `order_flow.rs` and the `shop-*` crates beside it.
