//! Generated code must not rely on the prelude or on names in the user's scope.

#![deny(warnings)]
#![allow(dead_code, reason = "the shadowing items exist only to be in scope")]
#![allow(
    non_camel_case_types,
    clippy::upper_case_acronyms,
    reason = "shadows the names generated code could refer to"
)]

struct Result;
struct Option;
struct Ok;
struct Err;
struct Box;
struct Some;
struct None;
struct Vec;
struct String;
struct core;
struct std;
struct linkme;
struct SIGNAL;
struct HANDLER;

mod signals_core {}

struct Ctx<'a> {
    seen: &'a mut u32,
}

#[derive(::signals_core::Signal)]
#[signal(context = Ctx<'_>)]
struct Named {
    value: u32,
}

#[derive(::signals_core::Signal)]
struct Unit;

#[derive(::signals_core::Signal)]
#[signal(context = u32)]
struct Tuple(u32);

#[derive(::signals_core::Signal)]
enum Either {
    Left,
    Right(u8),
}

#[::signals_core::on(Named, priority = 1)]
fn add_value(sig: &Named, ctx: &mut Ctx<'_>) -> ::core::result::Result<(), ::std::io::Error> {
    *ctx.seen += sig.value;
    ::core::result::Result::Ok(())
}

#[::signals_core::on(Unit)]
fn unit(_: &Unit) {}

#[::signals_core::on(Tuple)]
fn tuple(sig: &Tuple, total: &mut u32) {
    *total += sig.0;
}

#[::signals_core::on(Either)]
fn either(sig: &Either, _: &()) {
    let _ = sig;
}

#[test]
fn macros_expand_with_the_prelude_shadowed() {
    let mut seen = 0;
    ::signals_core::notify(&Named { value: 2 }, &mut Ctx { seen: &mut seen }).unwrap();
    ::signals_core::notify(&Unit, &mut ()).unwrap();
    ::signals_core::notify(&Either::Right(1), &mut ()).unwrap();
    let mut total = 0;
    ::signals_core::notify(&Tuple(5), &mut total).unwrap();
    assert_eq!((seen, total), (2, 5));
}
