//! The broker rung's metrics, through the [`metrics`] facade (see `docs/metrics.md`): what the
//! relay published, and what a subscriber acked, sent back for redelivery, or recorded dead.

use metrics::counter;

/// The relay: one message of the publishing function `function` to `subject` was acked by the
/// stream (`published`), or not (its job fails and is retried after a backoff).
pub(crate) fn relayed(function: &'static str, subject: &str, published: bool) {
    let labels = [
        ("function", function.to_owned()),
        ("subject", subject.to_owned()),
    ];
    match published {
        true => counter!("signals_messages_published_total", &labels).increment(1),
        false => counter!("signals_messages_publish_failed_total", &labels).increment(1),
    }
}

/// How a subscriber settled a delivery.
pub(crate) enum Settled {
    /// Its effects committed (or it was seen before): acked.
    Acked,
    /// It failed: naked, to be delivered again after a backoff.
    Redelivered,
    /// Past its budget: recorded dead and terminated.
    Dead,
}

/// A subscriber of durable consumer `consumer` settled a message of `subject`.
pub(crate) fn settled(consumer: &str, subject: &str, how: Settled) {
    let labels = [
        ("consumer", consumer.to_owned()),
        ("subject", subject.to_owned()),
    ];
    let name = match how {
        Settled::Acked => "signals_messages_acked_total",
        Settled::Redelivered => "signals_messages_redelivered_total",
        Settled::Dead => "signals_messages_dead_total",
    };
    counter!(name, &labels).increment(1);
}
