//! The catalog in other shapes: a Mermaid flowchart for docs, and (feature `serde`) any serde
//! format.

use std::fmt::Write as _;

use crate::catalog::Catalog;
use crate::handler::HandlerInfo;

impl Catalog {
    /// The wiring as a [Mermaid](https://mermaid.js.org) flowchart: each signal points to its
    /// handlers, numbered in run order and labelled with their priority and filter; a dotted
    /// `before` edge joins two handlers that `after`/`before` order; wiring problems hang off
    /// their signal, in red. Signals without handlers are drawn dashed.
    ///
    /// # Examples
    ///
    /// ```
    /// use signals_core::{catalog, on, Signal};
    ///
    /// #[derive(Signal)]
    /// pub struct UserSignedUp;
    ///
    /// #[on(UserSignedUp, priority = 5)]
    /// fn send_welcome_email(_: &UserSignedUp) {}
    ///
    /// let chart = catalog().to_mermaid();
    /// assert!(chart.starts_with("flowchart LR\n"));
    /// assert!(chart.contains("::send_welcome_email"));
    /// ```
    pub fn to_mermaid(&self) -> String {
        let mut chart = String::from("flowchart LR\n");
        chart.push_str("    classDef signal font-weight:bold\n");
        chart.push_str("    classDef unhandled stroke-dasharray:5 5\n");
        chart.push_str("    classDef problem stroke:#c00,color:#c00\n");
        for (i, signal) in self.signals().enumerate() {
            let class = if signal.has_handlers() {
                "signal"
            } else {
                "unhandled"
            };
            let _ = writeln!(chart, "    s{i}[\"{}\"]:::{class}", escape(signal.path()));
            let handlers: Vec<&HandlerInfo> = signal.handlers().collect();
            for (j, handler) in handlers.iter().enumerate() {
                let _ = writeln!(
                    chart,
                    "    s{i} -->|\"{}\"| s{i}h{j}[\"{}\"]",
                    escape(&edge_label(j, handler)),
                    escape(&node_label(handler)),
                );
            }
            // `after`/`before`: a dotted edge from the handler that runs first.
            for (j, handler) in handlers.iter().enumerate() {
                for first in handler.after() {
                    if let Some(k) = handlers.iter().position(|h| std::ptr::eq(*h, first)) {
                        let _ = writeln!(chart, "    s{i}h{k} -.->|\"before\"| s{i}h{j}");
                    }
                }
            }
            for (n, problem) in signal.problems().enumerate() {
                let text = escape(&format!("! {problem}"));
                let _ = writeln!(chart, "    s{i} -.- s{i}p{n}[\"{text}\"]:::problem");
            }
        }
        chart
    }
}

fn edge_label(position: usize, handler: &HandlerInfo) -> String {
    let mut label = format!("{}. priority {}", position + 1, handler.priority());
    if let Some(filter) = handler.filter() {
        let _ = write!(label, ", when {filter}");
    }
    if let Some(queue) = handler.queue() {
        let _ = write!(label, ", queue {queue}");
    }
    if let Some(subject) = handler.publish() {
        let _ = write!(label, ", publish {subject}");
    }
    label
}

fn node_label(handler: &HandlerInfo) -> String {
    match handler.is_async() {
        true => format!("async {}", handler.name()),
        false => handler.name().to_owned(),
    }
}

/// Mermaid labels are quoted; quotes and angle brackets inside them are written as entities.
fn escape(text: &str) -> String {
    text.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

#[cfg(feature = "serde")]
mod serde_impls {
    use serde::ser::{Serialize, SerializeSeq, SerializeStruct, Serializer};

    use super::{Catalog, HandlerInfo};
    use crate::signal::SignalInfo;

    /// `{"signals": [...]}`, sorted by path.
    impl Serialize for Catalog {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut catalog = serializer.serialize_struct("Catalog", 1)?;
            catalog.serialize_field("signals", &Signals(self))?;
            catalog.end()
        }
    }

    struct Signals<'a>(&'a Catalog);

    impl Serialize for Signals<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut signals = serializer.serialize_seq(Some(self.0.len()))?;
            for signal in self.0.signals() {
                signals.serialize_element(signal)?;
            }
            signals.end()
        }
    }

    /// The signal's path, name, context, location, whether it is asynchronous, its schedule
    /// (`null` unless periodic), its handlers in
    /// run order, and its wiring problems.
    impl Serialize for SignalInfo {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut signal = serializer.serialize_struct("SignalInfo", 10)?;
            signal.serialize_field("path", self.path())?;
            signal.serialize_field("name", self.name())?;
            signal.serialize_field("context", self.context())?;
            signal.serialize_field("file", self.file())?;
            signal.serialize_field("line", &self.line())?;
            signal.serialize_field("asynchronous", &self.is_async())?;
            signal.serialize_field("schedule", &self.schedule())?;
            let handlers: Vec<&HandlerInfo> = self.handlers().collect();
            signal.serialize_field("handled", &!handlers.is_empty())?;
            signal.serialize_field("handlers", &handlers)?;
            let problems: Vec<String> = self.problems().map(ToString::to_string).collect();
            signal.serialize_field("problems", &problems)?;
            signal.end()
        }
    }

    /// The handler's name, priority, filter, the handlers it runs after, its queue or subject,
    /// location and whether it is async.
    impl Serialize for HandlerInfo {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut handler = serializer.serialize_struct("HandlerInfo", 9)?;
            handler.serialize_field("name", self.name())?;
            handler.serialize_field("priority", &self.priority())?;
            handler.serialize_field("filter", &self.filter())?;
            let after: Vec<&str> = self.after().map(HandlerInfo::name).collect();
            handler.serialize_field("after", &after)?;
            handler.serialize_field("queue", &self.queue())?;
            handler.serialize_field("publish", &self.publish())?;
            handler.serialize_field("file", self.file())?;
            handler.serialize_field("line", &self.line())?;
            handler.serialize_field("asynchronous", &self.is_async())?;
            handler.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_keeps_labels_inside_their_quotes() {
        assert_eq!(escape(r#"Vec<"a">"#), "Vec#lt;#quot;a#quot;#gt;");
    }
}
