//! The catalog lists every signal linked into the program, with its handlers in run order.

#![allow(missing_docs, reason = "test signals")]

use signals_core::{catalog, on, Signal};

pub struct Db;

#[derive(Signal)]
#[signal(context = Db)]
pub struct OrderCreated;

#[derive(Signal)]
#[signal(context = Db)]
pub struct OrderCancelled;

pub mod users {
    #[derive(signals_core::Signal)]
    #[signal(context = &'_ super::Db)]
    pub struct SignedUp;
}

#[on(OrderCreated, priority = 10)]
fn create_billing_record(_: &OrderCreated, _: &mut Db) {}

#[on(OrderCreated)]
fn write_audit_log(_: &OrderCreated) {}

#[on(users::SignedUp, priority = -3)]
fn send_welcome_email(_: &users::SignedUp, _: &&Db) {}

#[derive(Signal)]
pub struct Shipped {
    pub total: u64,
}

#[on(Shipped)]
fn pack(_: &Shipped) {}

// Priority 5 alone would run it first; `after` puts it after `pack`, and the catalog says why.
#[on(Shipped, priority = 5, after = pack, when = |s| s.total  >  100)]
fn insure(_: &Shipped) {}

#[test]
fn lists_every_signal_sorted_by_path_with_handlers_in_run_order() {
    let listed: Vec<_> = catalog()
        .signals()
        .map(|signal| {
            let handlers: Vec<(&str, i32)> = signal
                .handlers()
                .map(|h| (h.name(), h.priority()))
                .collect();
            (signal.path(), signal.context(), handlers)
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("catalog::OrderCancelled", "Db", vec![]),
            (
                "catalog::OrderCreated",
                "Db",
                vec![
                    ("catalog::create_billing_record", 10),
                    ("catalog::write_audit_log", 0)
                ]
            ),
            (
                "catalog::Shipped",
                "()",
                vec![("catalog::pack", 0), ("catalog::insure", 5)]
            ),
            (
                "catalog::users::SignedUp",
                "&'_ super::Db",
                vec![("catalog::send_welcome_email", -3)]
            ),
        ]
    );
    assert_eq!(catalog().len(), 4);
    assert!(!catalog().is_empty());
}

#[test]
fn records_where_signals_and_handlers_are_defined() {
    let created = catalog().get::<OrderCreated>();
    assert_eq!(created.name(), "OrderCreated");
    assert_eq!(created.file(), file!());
    assert_eq!(created.line(), line_of("#[derive(Signal)]"));
    let billing = created.handlers().next().unwrap();
    assert_eq!(billing.file(), file!());
    assert_eq!(
        billing.line(),
        line_of("#[on(OrderCreated, priority = 10)]")
    );
}

/// The line of this file that starts with `text`, first match.
fn line_of(text: &str) -> u32 {
    let index = include_str!("catalog.rs")
        .lines()
        .position(|line| line.trim_start().starts_with(text))
        .unwrap();
    index as u32 + 1
}

#[test]
fn display_prints_a_table_of_who_reacts_to_what() {
    let file = file!();
    let billing = line_of("#[on(OrderCreated, priority = 10)]");
    let audit = line_of("#[on(OrderCreated)]");
    let welcome = line_of("#[on(users::SignedUp, priority = -3)]");
    let pack = line_of("#[on(Shipped)]");
    let insure = line_of("#[on(Shipped, priority = 5");
    let expected = format!(
        "catalog::OrderCancelled  (context: Db; no handlers; if they are in another crate, link it with `use that_crate as _;`)\n\
         catalog::OrderCreated  (context: Db; 2 handlers)\n\
         \x20   10  catalog::create_billing_record                                {file}:{billing}\n\
         \x20    0  catalog::write_audit_log                                      {file}:{audit}\n\
         catalog::Shipped  (context: (); 2 handlers)\n\
         \x20    0  catalog::pack                                                 {file}:{pack}\n\
         \x20    5  catalog::insure when |s| s.total  >  100 after catalog::pack  {file}:{insure}\n\
         catalog::users::SignedUp  (context: &'_ super::Db; 1 handler)\n\
         \x20   -3  catalog::send_welcome_email                                   {file}:{welcome}\n"
    );
    assert_eq!(catalog().to_string(), expected);
}

#[test]
fn find_looks_signals_up_by_path() {
    let found: Vec<_> = catalog().find("catalog::users::SignedUp").collect();
    assert_eq!(found.len(), 1);
    assert!(std::ptr::eq(found[0], catalog().get::<users::SignedUp>()));
    assert_eq!(catalog().find("catalog::Nope").count(), 0);
}

#[test]
fn mermaid_draws_each_signal_to_its_handlers_in_run_order() {
    let expected = "flowchart LR
    classDef signal font-weight:bold
    classDef unhandled stroke-dasharray:5 5
    classDef problem stroke:#c00,color:#c00
    s0[\"catalog::OrderCancelled\"]:::unhandled
    s1[\"catalog::OrderCreated\"]:::signal
    s1 -->|\"1. priority 10\"| s1h0[\"catalog::create_billing_record\"]
    s1 -->|\"2. priority 0\"| s1h1[\"catalog::write_audit_log\"]
    s2[\"catalog::Shipped\"]:::signal
    s2 -->|\"1. priority 0\"| s2h0[\"catalog::pack\"]
    s2 -->|\"2. priority 5, when |s| s.total  #gt;  100\"| s2h1[\"catalog::insure\"]
    s2h0 -.->|\"before\"| s2h1
    s3[\"catalog::users::SignedUp\"]:::signal
    s3 -->|\"1. priority -3\"| s3h0[\"catalog::send_welcome_email\"]
";
    assert_eq!(catalog().to_mermaid(), expected);
}

#[test]
fn signals_without_handlers_are_flagged() {
    let unhandled: Vec<_> = catalog()
        .signals()
        .filter(|signal| !signal.has_handlers())
        .map(|signal| signal.path())
        .collect();
    assert_eq!(unhandled, ["catalog::OrderCancelled"]);
}
