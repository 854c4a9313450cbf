//! A failing message's age budget counts from when this subscriber first tried it, not from
//! when it was published: after an outage longer than `max_age`, a backlog's messages get
//! their retries instead of one try each.
//!
//! The first tries are kept in memory, for the messages that failed and wait for a
//! redelivery: a restarted subscriber starts counting again, and instances sharing a durable
//! consumer count apart. A message gets more tries that way, never fewer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// When this subscriber first tried each message that failed here and is not settled yet, by
/// inbox key, in milliseconds.
pub(crate) struct FirstTries {
    tries: Mutex<Tries>,
    /// A first try older than this is forgotten (the message went to another instance, or is
    /// dead by now): twice the longest budget.
    horizon: i64,
}

struct Tries {
    first: HashMap<String, i64>,
    /// Old entries are dropped when the map reaches this size.
    prune_at: usize,
}

/// The map's size at which old first tries are dropped, at least.
const PRUNE_AT: usize = 1024;

impl FirstTries {
    /// First tries kept for twice `longest_budget`.
    pub(crate) fn new(longest_budget: Duration) -> FirstTries {
        let horizon = longest_budget.saturating_mul(2).as_millis();
        FirstTries {
            tries: Mutex::new(Tries {
                first: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
            horizon: i64::try_from(horizon).unwrap_or(i64::MAX),
        }
    }

    /// How long ago (in ms, at `now`) this subscriber first tried the message `id`, which
    /// failed now: 0 the first time.
    pub(crate) fn age(&self, id: &str, now: i64) -> i64 {
        let mut tries = self.lock();
        if tries.first.len() >= tries.prune_at {
            let oldest = now.saturating_sub(self.horizon);
            tries.first.retain(|_, first| *first >= oldest);
            tries.prune_at = (tries.first.len() * 2).max(PRUNE_AT);
        }
        let first = *tries.first.entry(id.to_owned()).or_insert(now);
        now.saturating_sub(first)
    }

    /// Forgets the message `id`: it is done or dead.
    pub(crate) fn settled(&self, id: &str) {
        self.lock().first.remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tries> {
        self.tries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// Tests of this module sit in it (not in a child module that would name its items).
#[cfg(test)]
#[test]
fn the_age_counts_from_the_first_failure_until_settled() {
    let tries = FirstTries::new(Duration::from_secs(60));
    assert_eq!(tries.age("a", 1_000), 0);
    assert_eq!(tries.age("a", 4_000), 3_000);
    assert_eq!(tries.age("b", 4_000), 0);
    tries.settled("a");
    assert_eq!(tries.age("a", 9_000), 0, "counted again once settled");
}

#[cfg(test)]
#[test]
fn first_tries_past_the_horizon_are_dropped_when_the_map_is_full() {
    let tries = FirstTries::new(Duration::from_millis(10));
    for i in 0..PRUNE_AT {
        tries.age(&i.to_string(), 0);
    }
    assert_eq!(tries.age("new", 1_000), 0);
    assert_eq!(tries.lock().first.len(), 1, "the old ones were dropped");
}
