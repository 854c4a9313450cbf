//! With signals-queue's default `sqlite` feature off, a queued handler of a signal notified with
//! `notify` (the rusqlite path) fails to compile with one error that names the feature. Stable
//! only: the expected message is rustc's wording of one release.

#[rustversion::stable]
#[test]
fn a_sync_queued_handler_needs_the_sqlite_feature() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
