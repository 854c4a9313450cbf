//! Feature `tracing`: each job attempt is a `job` span (id, handler, attempt, event id), and a
//! failed attempt, a dead job and a rescue are events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};
use signals_core::{notify, on, BoxError, Signal};
use signals_queue::{Enqueue, FromJob, JobScope, Queue, RetryPolicy, Worker};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records new spans (`name field=value ...`) and events (`LEVEL message field=value ...`).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0 += &format!(" {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = Line(span.metadata().name().to_owned());
        span.record(&mut line);
        self.0.lock().unwrap().push(line.0);
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

struct Ctx<'a> {
    tx: &'a Transaction<'a>,
}

impl Enqueue for Ctx<'_> {
    fn transaction(&self) -> &Connection {
        self.tx
    }
}

impl<'c> FromJob<'c> for Ctx<'c> {
    fn from_job(job: JobScope<'c>) -> Result<Self, BoxError> {
        Ok(Ctx {
            tx: job.transaction(),
        })
    }
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>)]
struct Ping;

#[on(Ping, queue, max_attempts = 2)]
fn always_fails(_: &Ping, _: &mut Ctx<'_>) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("provider down"))
}

#[test]
fn attempts_are_spans_and_failures_events() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    Queue::open(&path).unwrap().migrate().unwrap();
    let mut conn = Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    notify(&Ping, &mut Ctx { tx: &tx }).unwrap();
    tx.commit().unwrap();
    Worker::builder(&path)
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
        })
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    let lines = capture.0.lock().unwrap().clone();
    let spans: Vec<&String> = lines.iter().filter(|l| l.starts_with("job ")).collect();
    assert_eq!(spans.len(), 2, "{lines:#?}");
    assert!(spans[0].contains(" handler=\"tracing::always_fails\" attempt=1 event_id="));
    assert!(spans[1].contains(" attempt=2 "));
    // The job's events (the worker also says when it leads the fleet).
    let events: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("job ") && !l.contains("the fleet"))
        .collect();
    assert_eq!(events.len(), 2, "{lines:#?}");
    assert!(events[0].starts_with("WARN message=job failed; it will be retried"));
    assert!(events[0].contains("error=provider down"));
    assert!(events[1].starts_with("ERROR message=job is dead"));
}
