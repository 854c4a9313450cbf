//! Feature `serde`: the catalog serializes with every signal, its handlers in run order, and
//! whether anything handles it.

#![allow(missing_docs, reason = "test signals")]

use signals_core::{catalog, on, Signal};

pub struct Shop;

#[derive(Signal)]
#[signal(context = Shop)]
pub struct OrderCreated;

#[derive(Signal)]
#[signal(context = Shop, asynchronous)]
pub struct OrderShipped;

fn is_large(_: &OrderCreated) -> bool {
    true
}

#[on(OrderCreated, priority = 2, when = is_large)]
fn bill(_: &OrderCreated, _: &mut Shop) {}

#[on(OrderCreated, priority = 5, after = bill)]
fn send_receipt(_: &OrderCreated) {}

#[test]
fn the_catalog_serializes_to_json() {
    let json = serde_json::to_value(catalog()).unwrap();
    let [created, shipped] = lines_starting_with("#[derive(Signal)]")[..] else {
        panic!("two signals");
    };
    let [bill, receipt] = lines_starting_with("#[on(OrderCreated")[..] else {
        panic!("two handlers");
    };
    assert_eq!(
        json,
        serde_json::json!({
            "signals": [
                {
                    "path": "serde::OrderCreated",
                    "name": "OrderCreated",
                    "context": "Shop",
                    "file": "signals-core/tests/serde.rs",
                    "line": created,
                    "asynchronous": false,
                    "schedule": null,
                    "handled": true,
                    "handlers": [{
                        "name": "serde::bill",
                        "priority": 2,
                        "filter": "is_large",
                        "after": [],
                        "queue": null,
                        "publish": null,
                        "file": "signals-core/tests/serde.rs",
                        "line": bill,
                        "asynchronous": false,
                    }, {
                        "name": "serde::send_receipt",
                        "priority": 5,
                        "filter": null,
                        "after": ["serde::bill"],
                        "queue": null,
                        "publish": null,
                        "file": "signals-core/tests/serde.rs",
                        "line": receipt,
                        "asynchronous": false,
                    }],
                    "problems": [],
                },
                {
                    "path": "serde::OrderShipped",
                    "name": "OrderShipped",
                    "context": "Shop",
                    "file": "signals-core/tests/serde.rs",
                    "line": shipped,
                    "asynchronous": true,
                    "schedule": null,
                    "handled": false,
                    "handlers": [],
                    "problems": [],
                },
            ]
        })
    );
}

/// The numbers of the lines of this file that start with `prefix`.
fn lines_starting_with(prefix: &str) -> Vec<u32> {
    let source = include_str!("serde.rs");
    let lines = source.lines().enumerate();
    lines
        .filter(|(_, line)| line.starts_with(prefix))
        .map(|(index, _)| index as u32 + 1)
        .collect()
}
