//! Integration tests of `signals-core` live in `tests/`, compile-fail tests in `ui/`, and the
//! crates they wire together in `crates/`.
