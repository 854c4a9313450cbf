//! The async order flow example of `signals-core`; see `order_flow_async.rs` beside this file.
//! It is a package of its own so that the sync example, in `examples/`, builds neither tokio
//! nor sqlx.
