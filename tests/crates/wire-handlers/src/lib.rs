//! Handlers of `wire-signals`' signals, in private nested modules, plus a signal of its own
//! whose type name collides with one in `wire-signals`.

mod orders {
    use signals_core::on;
    use wire_signals::{OrderPlaced, Trace};

    #[on(OrderPlaced)]
    fn log_order(_: &OrderPlaced, trace: &mut Trace) {
        trace.calls.push("wire_handlers::orders::log_order");
    }

    mod nested {
        use signals_core::on;
        use wire_signals::OrderPlaced as Placed;

        #[on(Placed, priority = 5)]
        fn reserve_stock(_: &Placed, trace: &mut wire_signals::Trace) {
            trace
                .calls
                .push("wire_handlers::orders::nested::reserve_stock");
        }
    }
}

mod events {
    use signals_core::on;
    use wire_signals::Trace;

    #[on(wire_signals::billing::Event)]
    fn on_billing_event(_: &wire_signals::billing::Event, trace: &mut Trace) {
        trace.calls.push("wire_handlers::events::on_billing_event");
    }

    #[on(wire_signals::shipping::Event)]
    fn on_shipping_event(_: &wire_signals::shipping::Event, trace: &mut Trace) {
        trace.calls.push("wire_handlers::events::on_shipping_event");
    }

    #[on(crate::OrderPlaced)]
    fn on_local_order_placed(_: &crate::OrderPlaced, trace: &mut Trace) {
        trace
            .calls
            .push("wire_handlers::events::on_local_order_placed");
    }
}

/// Same type name as `wire_signals::OrderPlaced`, and a different signal.
#[derive(signals_core::Signal)]
#[signal(context = wire_signals::Trace)]
pub struct OrderPlaced;
