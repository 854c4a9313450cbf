//! Messages a program's publishing functions wrote, waiting in the outbox with no relay running:
//! the program's async worker says so in the log (a `tracing` warning), on both databases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signals_core::{notify_async, on, Signal};
use signals_queue::AsyncWorker;
use tracing::field::{Field, Visit};

mod support;
use support::{Ctx, Db};

/// Every event's message, from every thread.
#[derive(Clone, Default)]
struct Messages(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Messages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(message.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Signal, Serialize, Deserialize)]
#[signal(context = Ctx<'_>, asynchronous)]
struct Shipped;

/// The worker's own handler (a worker needs one to start).
#[on(Shipped, queue)]
async fn record(_: &Shipped, _: &mut Ctx<'_>) {}

#[derive(Serialize)]
struct ShippedMessage;

/// Its message waits for a relay that never comes.
#[on(Shipped, publish = "test.shipped")]
fn shipped_message(_: &Shipped) -> ShippedMessage {
    ShippedMessage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_outbox_with_no_relay_is_reported() {
    let messages = Messages::default();
    tracing::subscriber::set_global_default(messages.clone()).unwrap();
    let warned = |messages: &Messages| {
        let messages = messages.0.lock().unwrap();
        messages
            .iter()
            .filter(|message| message.contains("is a relay (signals-broker) running"))
            .count()
    };
    for db in Db::all().await {
        let name = db.name();
        let before = warned(&messages);
        let mut tx = db.pool.begin().await.unwrap();
        notify_async(&Shipped, &mut Ctx { tx: tx.tx() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // A lease of 200 ms: the outbox is looked at every lease and reported after two.
        let running = AsyncWorker::builder(db.pool.clone())
            .lease(Duration::from_millis(200))
            .poll_interval(Duration::from_millis(20))
            .build()
            .await
            .unwrap()
            .start();
        running.wait_idle().await.unwrap();
        assert_eq!(warned(&messages), before, "{name}: reported at once");
        for _ in 0..300 {
            if warned(&messages) > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            warned(&messages) > before,
            "{name}: no warning among {:?}",
            messages.0.lock().unwrap()
        );
        running.shutdown(Duration::from_secs(5)).await.unwrap();
        db.drop_schema().await;
    }
}
