//! Relative order: the `after`/`before` records `#[on]` emits, and the topological sort that
//! applies them on top of priorities. Also the problems the index can find in the wiring.

use std::any::TypeId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use crate::handler::HandlerInfo;
use crate::signal::{Signal, SignalInfo};

/// Not public API. What `after = f` and `before = f` accept: a function of the shape of a
/// handler of `S`. Whether `f` really is registered with `#[on(S)]` is checked when the program's
/// index is built ([`check_order`](crate::check_order)); the shape is checked here, at the path.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`after` and `before` name a handler of `{S}`, and `{Self}` is not one",
    label = "not a handler of `{S}`",
    note = "name a function that has `#[on({S})]`, by its path from here"
)]
pub trait HandlerOf<S, Shape> {}

/// Not public API. The [`HandlerOf`] shapes.
#[doc(hidden)]
pub mod shape {
    /// `fn(&S)`.
    pub enum Signal {}
    /// `fn(&S, &Ctx)`.
    pub enum Shared {}
    /// `fn(&S, &mut Ctx)`.
    pub enum Exclusive {}
    /// `async fn(&S)`.
    pub enum AsyncSignal {}
    /// `async fn(&S, &Ctx)`.
    pub enum AsyncShared {}
    /// `async fn(&S, &mut Ctx)`.
    pub enum AsyncExclusive {}
}

impl<S: Signal, R, F: Fn(&S) -> R> HandlerOf<S, shape::Signal> for F {}
impl<S: Signal, R, F> HandlerOf<S, shape::Shared> for F where
    F: for<'x, 'c> Fn(&S, &'x S::Context<'c>) -> R
{
}
impl<S: Signal, R, F> HandlerOf<S, shape::Exclusive> for F where
    F: for<'x, 'c> Fn(&S, &'x mut S::Context<'c>) -> R
{
}
impl<S: Signal, R, F: AsyncFn(&S) -> R> HandlerOf<S, shape::AsyncSignal> for F {}
impl<S: Signal, R, F> HandlerOf<S, shape::AsyncShared> for F where
    F: for<'x, 'c> AsyncFn(&S, &'x S::Context<'c>) -> R
{
}
impl<S: Signal, R, F> HandlerOf<S, shape::AsyncExclusive> for F where
    F: for<'x, 'c> AsyncFn(&S, &'x mut S::Context<'c>) -> R
{
}

/// Not public API. The identity of a handler function: the `TypeId` of its item type.
#[doc(hidden)]
pub const fn function_id<F: 'static>(_: &F) -> TypeId {
    TypeId::of::<F>()
}

/// Not public API. [`function_id`] of the function that `after = f` or `before = f` names,
/// checked to be of a handler's shape for `S`.
#[doc(hidden)]
pub const fn handler_id<S, Shape, F: HandlerOf<S, Shape> + 'static>(_: &F) -> TypeId {
    TypeId::of::<F>()
}

/// Not public API. One `after = other` or `before = other` on a handler of a signal.
#[doc(hidden)]
pub struct OrderConstraint {
    pub(crate) signal: TypeId,
    /// The function whose `#[on]` carries the constraint.
    pub(crate) function: TypeId,
    /// The function it names.
    pub(crate) other: TypeId,
    /// The path of `other` as written, for messages.
    pub(crate) other_path: &'static str,
    /// `after = other` (else `before = other`).
    pub(crate) after: bool,
}

impl OrderConstraint {
    /// Not public API. Used by generated code.
    #[doc(hidden)]
    pub const fn __new<S: 'static>(
        function: TypeId,
        other: TypeId,
        other_path: &'static str,
        after: bool,
    ) -> Self {
        OrderConstraint {
            signal: TypeId::of::<S>(),
            function,
            other,
            other_path,
            after,
        }
    }

    /// `"after"` or `"before"`, as written.
    pub(crate) fn keyword(&self) -> &'static str {
        if self.after {
            "after"
        } else {
            "before"
        }
    }
}

/// The order of `len` handlers, given in priority-and-name order, that satisfies every `(first,
/// then)` edge and otherwise keeps that order; or, if the edges form a cycle, the handlers left
/// in it (those on a cycle and those after one), ascending.
pub(crate) fn sort(len: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let mut successors = vec![Vec::new(); len];
    let mut predecessors = vec![0usize; len];
    for &(first, then) in edges {
        successors[first].push(then);
        predecessors[then] += 1;
    }
    // Kahn's algorithm, always taking the ready handler that comes first by priority and name.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..len)
        .filter(|&i| predecessors[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(len);
    while let Some(Reverse(next)) = ready.pop() {
        order.push(next);
        for &then in &successors[next] {
            predecessors[then] -= 1;
            if predecessors[then] == 0 {
                ready.push(Reverse(then));
            }
        }
    }
    match order.len() == len {
        true => Ok(order),
        false => Err((0..len).filter(|&i| predecessors[i] > 0).collect()),
    }
}

/// A mistake in the program's wiring that the compiler could not see: an `after`/`before` cycle,
/// a constraint naming a function that is not a handler of the signal, a function registered
/// twice for one signal, or two handlers (or two signals) with the same full name.
///
/// The first three keep the signal from being notified ([`prevents_notify`](Self::prevents_notify)):
/// `notify` of that signal returns an [`Error`](crate::Error) carrying this problem, and runs no
/// handler. Every other signal works. [`check_order`](crate::check_order) lists every problem;
/// the [`catalog`](crate::catalog) shows each under its signal.
#[derive(Clone, Debug)]
pub struct Problem {
    signals: Vec<&'static SignalInfo>,
    handlers: Vec<&'static HandlerInfo>,
    message: String,
    prevents_notify: bool,
}

impl Problem {
    pub(crate) fn new(
        signals: Vec<&'static SignalInfo>,
        handlers: Vec<&'static HandlerInfo>,
        message: String,
        prevents_notify: bool,
    ) -> Self {
        Problem {
            signals,
            handlers,
            message,
            prevents_notify,
        }
    }

    /// The signals concerned: one, or for two signals with the same path, both.
    pub fn signals(&self) -> &[&'static SignalInfo] {
        &self.signals
    }

    /// The handlers concerned, in run order where they have one.
    pub fn handlers(&self) -> &[&'static HandlerInfo] {
        &self.handlers
    }

    /// Whether `notify` of the signal fails because of it (an order that cannot hold, or a
    /// handler registered twice); otherwise only names are ambiguous.
    pub fn prevents_notify(&self) -> bool {
        self.prevents_notify
    }

    /// Whether the problem concerns the signal `signal`.
    pub(crate) fn concerns(&self, signal: TypeId) -> bool {
        self.signals.iter().any(|s| s.type_id() == signal)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// Every wiring [`Problem`] of the program; see [`check_order`](crate::check_order).
#[derive(Debug)]
pub struct OrderError {
    problems: Vec<Problem>,
}

impl OrderError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        OrderError { problems }
    }

    /// Every problem, grouped by signal.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            write!(f, "{sep}{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for OrderError {}

#[cfg(test)]
mod tests {
    use super::sort;

    #[test]
    fn sort_keeps_the_given_order_where_no_edge_says_otherwise() {
        assert_eq!(sort(4, &[]), Ok(vec![0, 1, 2, 3]));
        assert_eq!(sort(4, &[(3, 0)]), Ok(vec![1, 2, 3, 0]));
        assert_eq!(sort(3, &[(2, 1), (1, 0)]), Ok(vec![2, 1, 0]));
    }

    #[test]
    fn sort_reports_the_handlers_a_cycle_holds_back() {
        assert_eq!(sort(3, &[(0, 1), (1, 0)]), Err(vec![0, 1]));
        assert_eq!(sort(4, &[(1, 2), (2, 1), (2, 3)]), Err(vec![1, 2, 3]));
    }
}
