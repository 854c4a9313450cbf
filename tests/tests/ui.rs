//! Misuse fails to compile with an error on the offending tokens: one file per mistake in `ui/`.
//!
//! The expected `.stderr` files are written by the stable toolchain; bless them with
//! `TRYBUILD=overwrite cargo test -p signals-tests --test ui` and read every one. rustc's wording
//! changes between releases, so the test runs on stable only: on beta and nightly it is not
//! compiled, and `cargo test --workspace` passes without it.

#[rustversion::stable]
#[test]
fn misuse_fails_to_compile_with_a_helpful_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
