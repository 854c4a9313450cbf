//! Nothing here: the test is `tests/ui.rs`.
