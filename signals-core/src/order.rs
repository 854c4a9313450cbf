//! Relative order: `#[on(S, after = other)]` and `before = other`, applied on top of priorities
//! when the index is built.

use std::any::TypeId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use crate::registry::Slot;

/// Not public API. The full name of a handler of `S`: `#[on]` implements it for a hidden marker
/// beside each handler function, so that `after = handler` names the function's own path.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`after` and `before` must name a handler of `{S}`",
    label = "not a handler of `{S}`"
)]
pub trait HandlerName<S> {
    /// `module_path!()` of the handler, `::`, its function's name.
    const NAME: &'static str;
}

/// One `after` or `before`: handler `first` of a signal runs before its handler `then`.
#[doc(hidden)]
pub struct OrderConstraint {
    signal: TypeId,
    first: &'static str,
    then: &'static str,
}

impl OrderConstraint {
    /// Not public API. Used by generated code.
    #[doc(hidden)]
    pub const fn __new<S: 'static>(first: &'static str, then: &'static str) -> Self {
        OrderConstraint {
            signal: TypeId::of::<S>(),
            first,
            then,
        }
    }

    pub(crate) fn signal(&self) -> TypeId {
        self.signal
    }
}

/// Signals whose `after`/`before` constraints cannot all hold; see [`check_order`].
#[derive(Debug)]
pub struct OrderError {
    problems: Vec<String>,
}

impl OrderError {
    pub(crate) fn new(problems: Vec<String>) -> Self {
        OrderError { problems }
    }

    /// One message per signal whose handlers cannot be ordered.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for OrderError {}

/// Checks that every signal's `after`/`before` constraints can hold together, without waiting
/// for the first `notify` to find out (which panics with the same message). Call it in a test.
///
/// # Errors
///
/// An [`OrderError`] naming, for each signal that cannot be ordered, the handlers that order
/// each other in a cycle.
///
/// # Examples
///
/// ```
/// use signals_core::{on, Signal};
///
/// #[derive(Signal)]
/// pub struct OrderCreated;
///
/// #[on(OrderCreated)]
/// fn create_billing_record(_: &OrderCreated) {}
///
/// #[on(OrderCreated, after = create_billing_record)]
/// fn send_receipt(_: &OrderCreated) {}
///
/// signals_core::check_order()?;
/// # Ok::<(), signals_core::OrderError>(())
/// ```
pub fn check_order() -> Result<(), OrderError> {
    crate::registry::Index::build().map(drop)
}

/// Reorders `slots` (one signal's handlers, sorted by priority and name) so that every
/// constraint holds, keeping priority-and-name order wherever the constraints allow it.
pub(crate) fn apply(
    signal: &str,
    slots: &mut [Slot],
    constraints: &[&OrderConstraint],
) -> Result<(), String> {
    let positions = |name: &str| -> Vec<usize> {
        (0..slots.len())
            .filter(|&i| slots[i].info().name() == name)
            .collect()
    };
    let mut successors = vec![Vec::new(); slots.len()];
    let mut predecessors = vec![0usize; slots.len()];
    for constraint in constraints {
        let (firsts, thens) = (positions(constraint.first), positions(constraint.then));
        if firsts.is_empty() || thens.is_empty() {
            return Err(format!(
                "`{}` must run before `{}`, but both must be handlers of `{signal}`",
                constraint.first, constraint.then
            ));
        }
        for &first in &firsts {
            for &then in &thens {
                successors[first].push(then);
                predecessors[then] += 1;
            }
        }
    }
    // Kahn's algorithm, always taking the ready handler that comes first by priority and name.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..slots.len())
        .filter(|&i| predecessors[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(slots.len());
    while let Some(Reverse(next)) = ready.pop() {
        order.push(next);
        for &then in &successors[next] {
            predecessors[then] -= 1;
            if predecessors[then] == 0 {
                ready.push(Reverse(then));
            }
        }
    }
    if order.len() < slots.len() {
        let cycle: Vec<&str> = (0..slots.len())
            .filter(|&i| predecessors[i] > 0)
            .map(|i| slots[i].info().name())
            .collect();
        return Err(format!(
            "the `after`/`before` constraints of `{signal}` form a cycle among {cycle:?}"
        ));
    }
    let sorted: Vec<Slot> = order.iter().map(|&i| slots[i]).collect();
    slots.copy_from_slice(&sorted);
    Ok(())
}
