//! The index built at the first `notify`: every handler sorted by signal and run order, every
//! signal by path and by type, the `after`/`before` edges, and the wiring problems found.
//!
//! Built once, from the link-time tables (`tables.rs`), in O(H log H) for H handlers. Each
//! signal then caches its own run of the sorted handlers in its `SignalTable`. A problem that
//! keeps a signal from being ordered is kept here, not cached: that signal's every `notify` asks
//! again (a binary search, no rebuild) and fails, and every other signal is unaffected.

use std::any::TypeId;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::handler::HandlerInfo;
use crate::order::{self, OrderConstraint, Problem};
use crate::signal::{SignalInfo, SignalTable, Slot};
use crate::tables;

/// All handlers sorted by signal, then run order; all signals, by path and by type; the
/// resolved `after`/`before` edges; every wiring problem.
/// `(first, then)`: handler `first` runs before handler `then` of the same signal.
type Edge = (&'static HandlerInfo, &'static HandlerInfo);

pub(crate) struct Index {
    /// The `TypeId` of each slot's signal, parallel to `slots`, for binary search.
    keys: Box<[TypeId]>,
    slots: Box<[Slot]>,
    by_path: Box<[&'static SignalInfo]>,
    by_type: Box<[&'static SignalInfo]>,
    edges: Box<[Edge]>,
    problems: Box<[Problem]>,
}

static INDEX: OnceLock<Index> = OnceLock::new();

/// The program's index, built by the first caller. Never fails: problems are recorded.
pub(crate) fn index() -> &'static Index {
    INDEX.get_or_init(Index::build)
}

/// The handlers of `info`'s signal for `notify`, cached in `table` from now on; or, if a wiring
/// problem keeps the signal from being notified, that problem (never cached).
pub(crate) fn load(
    info: &'static SignalInfo,
    table: &SignalTable,
) -> Result<&'static [Slot], &'static Problem> {
    let index = index();
    match index.blocking_problem(info.type_id()) {
        Some(problem) => Err(problem),
        None => Ok(table.fill(index.slots_of(info))),
    }
}

impl Index {
    fn build() -> Index {
        let mut keyed: Vec<(TypeId, Slot)> = tables::handlers()
            .map(|info| (info.signal, Slot::new(info)))
            .collect();
        keyed.sort_unstable_by(|(a_key, a), (b_key, b)| {
            a_key.cmp(b_key).then_with(|| run_order(a.info(), b.info()))
        });
        let (keys, slots) = keyed.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        let mut by_type: Vec<&'static SignalInfo> = tables::signals().collect();
        by_type.sort_unstable_by_key(|signal| signal.type_id());
        let mut by_path = by_type.clone();
        by_path.sort_by_key(|signal| (signal.path(), signal.file(), signal.line()));
        let mut index = Index {
            keys: keys.into_boxed_slice(),
            slots: slots.into_boxed_slice(),
            by_path: by_path.into_boxed_slice(),
            by_type: by_type.into_boxed_slice(),
            edges: Box::new([]),
            problems: Box::new([]),
        };
        let mut problems = index.registered_twice();
        let (edges, order_problems) = index.apply_constraints();
        problems.extend(order_problems);
        problems.extend(index.same_names());
        problems.sort_by_key(|problem| problem.signals().first().map(|s| (s.path(), s.file())));
        index.edges = edges.into_boxed_slice();
        index.problems = problems.into_boxed_slice();
        index
    }

    /// The range of `slots` that holds `signal`'s handlers.
    fn run(&self, signal: TypeId) -> std::ops::Range<usize> {
        let start = self.keys.partition_point(|&k| k < signal);
        start..start + self.keys[start..].partition_point(|&k| k == signal)
    }

    /// The handlers of `signal`, in run order (in priority order if its order cannot hold).
    pub(crate) fn slots_of(&'static self, signal: &SignalInfo) -> &'static [Slot] {
        &self.slots[self.run(signal.type_id())]
    }

    /// Every signal in the program, sorted by path.
    pub(crate) fn signals(&'static self) -> &'static [&'static SignalInfo] {
        &self.by_path
    }

    /// The signal whose type is `type_id`, if it is linked.
    pub(crate) fn signal(&self, type_id: TypeId) -> Option<&'static SignalInfo> {
        let found = self.by_type.binary_search_by_key(&type_id, |s| s.type_id());
        found.ok().map(|at| self.by_type[at])
    }

    /// The handlers that `after`/`before` order directly before `handler`.
    pub(crate) fn after<'a>(
        &'static self,
        handler: &'a HandlerInfo,
    ) -> impl Iterator<Item = &'static HandlerInfo> + 'a {
        self.edges
            .iter()
            .filter(move |(_, then)| std::ptr::eq(*then, handler))
            .map(|(first, _)| *first)
    }

    /// Every wiring problem in the program.
    pub(crate) fn problems(&'static self) -> &'static [Problem] {
        &self.problems
    }

    /// The problem that keeps `signal` from being notified, if any.
    fn blocking_problem(&'static self, signal: TypeId) -> Option<&'static Problem> {
        self.problems
            .iter()
            .find(|problem| problem.prevents_notify() && problem.concerns(signal))
    }

    /// The signal of a handler or constraint, for messages: every handler's signal is linked
    /// (`#[on]` requires `Signal`, which only the derive implements, and the derive registers).
    fn signal_of(&self, type_id: TypeId) -> &'static SignalInfo {
        self.signal(type_id)
            .expect("every handler's signal is registered")
    }

    /// One function registered more than once for the same signal (e.g. `#[on(E)]` and
    /// `#[on(crate::E)]` on one function): it would run twice.
    fn registered_twice(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for run in self.runs() {
            let slots = &self.slots[run];
            for (i, slot) in slots.iter().enumerate() {
                let first = slots[..i]
                    .iter()
                    .any(|s| s.info().same_function(slot.info()));
                let copies: Vec<&'static HandlerInfo> = slots[i..]
                    .iter()
                    .map(Slot::info)
                    .filter(|info| info.same_function(slot.info()))
                    .collect();
                if !first && copies.len() > 1 {
                    let signal = self.signal_of(slot.info().signal);
                    let message = format!(
                        "`{}` is registered {} times for `{}` ({}): remove all but one `#[on]`",
                        slot.info().name(),
                        copies.len(),
                        signal.path(),
                        locations(&copies),
                    );
                    problems.push(Problem::new(vec![signal], copies, message, true));
                }
            }
        }
        problems
    }

    /// The ranges of `slots`, one per signal that has handlers.
    fn runs(&self) -> Vec<std::ops::Range<usize>> {
        let mut runs = Vec::new();
        let mut start = 0;
        while start < self.keys.len() {
            let run = self.run(self.keys[start]);
            start = run.end;
            runs.push(run);
        }
        runs
    }

    /// Applies every signal's `after`/`before` constraints to its run of `slots`: the edges that
    /// hold, and a problem for each signal whose constraints cannot.
    fn apply_constraints(
        &mut self,
    ) -> (
        Vec<(&'static HandlerInfo, &'static HandlerInfo)>,
        Vec<Problem>,
    ) {
        let mut constraints: Vec<&'static OrderConstraint> = tables::order().collect();
        constraints.sort_by_key(|constraint| constraint.signal);
        let (mut edges, mut problems) = (Vec::new(), Vec::new());
        for group in constraints.chunk_by(|a, b| a.signal == b.signal) {
            let signal = self.signal_of(group[0].signal);
            let run = self.run(signal.type_id());
            match order_run(signal, &self.slots[run.clone()], group) {
                Ok((order, run_edges)) => {
                    let sorted: Vec<Slot> =
                        order.iter().map(|&i| self.slots[run.start + i]).collect();
                    self.slots[run].copy_from_slice(&sorted);
                    edges.extend(run_edges);
                }
                Err(problem) => problems.push(problem),
            }
        }
        (edges, problems)
    }

    /// Different functions with the same full name, and different signal types with the same
    /// path: the catalog, messages and `testing::mute` tell them apart by name only.
    fn same_names(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut by_name: HashMap<&'static str, Vec<&'static HandlerInfo>> = HashMap::new();
        for slot in self.slots.iter() {
            by_name
                .entry(slot.info().name())
                .or_default()
                .push(slot.info());
        }
        let mut names: Vec<_> = by_name.into_iter().collect();
        names.sort_by_key(|(name, _)| *name);
        for (name, handlers) in names {
            let mut functions = handlers.clone();
            functions.sort_by_key(|h| (h.file(), h.line()));
            functions.dedup_by(|a, b| a.same_function(b));
            if functions.len() > 1 {
                let mut signals: Vec<_> =
                    handlers.iter().map(|h| self.signal_of(h.signal)).collect();
                signals.dedup_by_key(|s| s.type_id());
                let message = format!(
                    "{} different handler functions are named `{name}` ({}): rename all but one, so that the catalog, `after`/`before` messages and `testing::mute` can tell them apart",
                    functions.len(),
                    locations(&functions),
                );
                problems.push(Problem::new(signals, handlers, message, false));
            }
        }
        for same in self.by_path.chunk_by(|a, b| a.path() == b.path()) {
            if same.len() > 1 {
                let at: Vec<String> = same
                    .iter()
                    .map(|s| format!("{}:{}", s.file(), s.line()))
                    .collect();
                let message = format!(
                    "{} different signal types have the path `{}` ({}): rename all but one, so that the catalog can tell them apart",
                    same.len(),
                    same[0].path(),
                    at.join(", "),
                );
                problems.push(Problem::new(same.to_vec(), Vec::new(), message, false));
            }
        }
        problems
    }
}

/// The order of one signal's handlers (`slots`, in priority order) under its `constraints`, and
/// the edges they resolve to; or the problem that keeps them from holding.
fn order_run(
    signal: &'static SignalInfo,
    slots: &[Slot],
    constraints: &[&'static OrderConstraint],
) -> Result<(Vec<usize>, Vec<Edge>), Problem> {
    let position = |function: TypeId| slots.iter().position(|s| s.info().function == function);
    let mut edges = Vec::with_capacity(constraints.len());
    for constraint in constraints {
        let own = position(constraint.function).expect("a constraint's own handler is linked");
        let Some(other) = position(constraint.other) else {
            let handler = slots[own].info();
            let message = format!(
                "`{}` ({}:{}) must run {} `{}`, which is not a handler of `{}` in this program: give it `#[on({})]`, or link the crate that defines it (`use that_crate as _;`)",
                handler.name(),
                handler.file(),
                handler.line(),
                constraint.keyword(),
                constraint.other_path,
                signal.path(),
                signal.name(),
            );
            return Err(Problem::new(vec![signal], vec![handler], message, true));
        };
        edges.push(if constraint.after {
            (other, own)
        } else {
            (own, other)
        });
    }
    // In run-order positions, not link order: messages and `after()` read the same everywhere.
    edges.sort_unstable();
    edges.dedup();
    match order::sort(slots.len(), &edges) {
        Ok(order) => {
            let resolved = edges
                .iter()
                .map(|&(first, then)| (slots[first].info(), slots[then].info()))
                .collect();
            Ok((order, resolved))
        }
        Err(held_back) => {
            let handlers: Vec<&'static HandlerInfo> =
                held_back.iter().map(|&i| slots[i].info()).collect();
            let message = format!(
                "the `after`/`before` constraints of `{}`'s handlers form a cycle: {}; no order satisfies them, so `{}` cannot be notified until one is removed",
                signal.path(),
                describe_edges(&edges, &held_back, slots),
                signal.name(),
            );
            Err(Problem::new(vec![signal], handlers, message, true))
        }
    }
}

/// The edges among the handlers a cycle holds back: "`a` (file:line) after `b` (file:line)".
fn describe_edges(edges: &[(usize, usize)], held_back: &[usize], slots: &[Slot]) -> String {
    let at = |i: usize| {
        let info = slots[i].info();
        format!("`{}` ({}:{})", info.name(), info.file(), info.line())
    };
    let inside: Vec<String> = edges
        .iter()
        .filter(|(first, then)| held_back.contains(first) && held_back.contains(then))
        .map(|&(first, then)| format!("{} before {}", at(first), at(then)))
        .collect();
    inside.join(", ")
}

/// `file:line` of each handler, comma-separated.
fn locations(handlers: &[&HandlerInfo]) -> String {
    let at: Vec<String> = handlers
        .iter()
        .map(|h| format!("{}:{}", h.file(), h.line()))
        .collect();
    at.join(", ")
}

/// Higher priority first; then ascending full name; then source location, so that the order
/// never depends on link order.
fn run_order(a: &HandlerInfo, b: &HandlerInfo) -> Ordering {
    b.priority()
        .cmp(&a.priority())
        .then_with(|| a.name().cmp(b.name()))
        .then_with(|| a.file().cmp(b.file()))
        .then_with(|| a.line().cmp(&b.line()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{on, Signal};

    #[derive(Signal)]
    struct Probe;

    #[on(Probe, priority = 1)]
    fn zulu(_: &Probe) {}

    #[on(Probe, priority = 1)]
    fn alpha(_: &Probe) {}

    #[on(Probe, priority = 2)]
    fn yankee(_: &Probe) {}

    fn info(name: &str) -> &'static HandlerInfo {
        tables::handlers()
            .find(|h| h.name().ends_with(name))
            .unwrap()
    }

    #[test]
    fn run_order_is_priority_descending_then_name_ascending() {
        assert_eq!(run_order(info("::yankee"), info("::alpha")), Ordering::Less);
        assert_eq!(run_order(info("::alpha"), info("::zulu")), Ordering::Less);
        assert_eq!(
            run_order(info("::zulu"), info("::yankee")),
            Ordering::Greater
        );
        assert_eq!(run_order(info("::alpha"), info("::alpha")), Ordering::Equal);
    }

    #[test]
    fn slots_of_finds_exactly_the_signals_handlers_in_run_order() {
        let slots = index().slots_of(Probe::__info());
        let names: Vec<_> = slots.iter().map(|slot| slot.info().name()).collect();
        assert_eq!(
            names,
            [
                "signals_core::index::tests::yankee",
                "signals_core::index::tests::alpha",
                "signals_core::index::tests::zulu",
            ]
        );
    }

    #[test]
    fn slice_names_carry_this_versions_semver_compatibility_range() {
        // Two semver-incompatible versions in one program must not share a linker section:
        // bump the `SIGNALS_CORE_0_1_*` names with the version.
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.');
        let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
        let range = if major == "0" {
            format!("{major}_{minor}")
        } else {
            major.to_owned()
        };
        assert_eq!(
            range, "0_1",
            "rename the SIGNALS_CORE_0_1_* slices for {version}"
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_handler_costs_64_bytes_of_table() {
        // Every handler of every program pays this; keep it from growing unnoticed.
        assert_eq!(std::mem::size_of::<HandlerInfo>(), 64);
    }

    #[test]
    fn signal_names_drop_the_module_path() {
        assert_eq!(Probe::__info().name(), "Probe");
        assert_eq!(Probe::__info().path(), "signals_core::index::tests::Probe");
    }
}
