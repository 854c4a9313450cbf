//! A crate with a handler that no test binary references: the linker leaves it out.

#[signals_core::on(wire_signals::OrderPlaced)]
fn never_linked(_: &wire_signals::OrderPlaced, trace: &mut wire_signals::Trace) {
    trace.calls.push("wire_unlinked::never_linked");
}
