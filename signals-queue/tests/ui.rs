//! Misuse of `queue` fails to compile with an error at the `queue` argument: one file per
//! mistake in `ui/`. Stable only: the expected messages are rustc's wording of one release.

#[rustversion::stable]
#[test]
fn misuse_fails_to_compile_with_a_helpful_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
