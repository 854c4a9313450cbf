//! The consuming half of the catalog: the subscriptions this process has made (publishing
//! functions are in [`signals_core::catalog`], with their subject).

use std::sync::Mutex;

/// A subject bound to a signal by a `Subscriber` built in this process.
///
/// # Examples
///
/// ```
/// for subscription in signals_broker::subscriptions() {
///     // e.g. `shipping::OrderPlaced <- shop.orders.placed (stream SHOP, consumer shipping)`
///     println!("{subscription}");
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The signal's full path.
    pub signal: &'static str,
    /// The stream.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// The subject.
    pub subject: String,
}

impl std::fmt::Display for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} <- {} (stream {}, consumer {})",
            self.signal, self.subject, self.stream, self.consumer
        )
    }
}

static SUBSCRIPTIONS: Mutex<Vec<Subscription>> = Mutex::new(Vec::new());

/// The subscriptions this process has made, in the order they were built: the consuming half of
/// the catalog (publishing functions are in [`signals_core::catalog`], with their subject).
/// Subscriptions are made at run time, so they are known only once built.
pub fn subscriptions() -> Vec<Subscription> {
    SUBSCRIPTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Adds a subscription built now, unless the same one was built before.
pub(crate) fn register(subscription: Subscription) {
    let mut subscriptions = SUBSCRIPTIONS.lock().unwrap_or_else(|e| e.into_inner());
    if !subscriptions.contains(&subscription) {
        subscriptions.push(subscription);
    }
}
