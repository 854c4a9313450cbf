//! Feature `tracing`: a span per notify and per handler with its outcome, failures logged with
//! the handler's error, and a debug event for a signal that has no handlers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use signals_core::{notify, on, Signal};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Writes what happens, one line each: `new <name> <fields>`, `record <name> <fields>`,
/// `enter <name>`, `event <level> <fields>`.
#[derive(Clone, Default)]
struct Capture {
    log: Arc<Mutex<Vec<String>>>,
    names: Arc<Mutex<Vec<&'static str>>>,
    next_id: Arc<AtomicU64>,
}

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl Capture {
    fn push(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    fn name(&self, id: &Id) -> &'static str {
        self.names.lock().unwrap()[id.into_u64() as usize - 1]
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.names.lock().unwrap().push(span.metadata().name());
        let mut fields = Fields::default();
        span.record(&mut fields);
        self.push(format!("new {}{}", span.metadata().name(), fields.0));
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        self.push(format!("record {}{}", self.name(span), fields.0));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.push(format!("event {}{}", event.metadata().level(), fields.0));
    }

    fn enter(&self, span: &Id) {
        self.push(format!("enter {}", self.name(span)));
    }

    fn exit(&self, _: &Id) {}
}

#[derive(Signal)]
#[signal(context = u32)]
struct Charge;

#[on(Charge, priority = 1)]
fn reserve(_: &Charge, count: &mut u32) {
    *count += 1;
}

#[on(Charge)]
fn bill(_: &Charge) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("card declined"))
}

#[derive(Signal)]
struct Nobody;

#[test]
fn spans_record_each_handler_and_its_outcome() {
    let capture = Capture::default();
    let mut count = 0;
    let result = tracing::subscriber::with_default(capture.clone(), || notify(&Charge, &mut count));
    assert!(result.is_err());
    assert_eq!(
        capture.lines(),
        [
            "new notify signal=tracing::Charge handlers=2",
            "enter notify",
            "new handler handler=tracing::reserve",
            "enter handler",
            "record handler outcome=ok",
            "new handler handler=tracing::bill",
            "enter handler",
            "record handler outcome=error",
            "event WARN message=handler failed handler=tracing::bill error=card declined",
        ]
    );
}

#[test]
fn a_signal_without_handlers_is_logged() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || notify(&Nobody, &mut ())).unwrap();
    assert_eq!(
        capture.lines()[0],
        "event DEBUG message=signal notified with no handlers; if they are in another crate, link it with `use that_crate as _;` signal=tracing::Nobody"
    );
}
