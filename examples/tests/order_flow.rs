//! The order flow example's own code, tested: commit writes every handler's rows, a declined
//! card rolls back the order and every row its handlers wrote, and the command line.

#[allow(dead_code, reason = "the example's `main` is not called here")]
#[path = "../order_flow.rs"]
mod order_flow;

use order_flow::{
    parse_args, place_order, Mode, PlaceOrderError, DECLINED_CARD, GOOD_CARD, SCHEMA, USAGE,
};
use rusqlite::Connection;
use shop_handlers::BillingError;
use shop_signals::Mailer;

fn database() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

const MAILER: Mailer = Mailer {
    from: "shop@example.com",
};

#[test]
fn a_committed_order_keeps_every_handlers_rows() {
    let mut conn = database();
    let order_id = place_order(&mut conn, &MAILER, "ada@example.com", 4200, GOOD_CARD).unwrap();

    let billed: i64 = conn
        .query_row(
            "SELECT amount_cents FROM billing WHERE order_id = ?1",
            [order_id],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(billed, 4200);
    let subject: String = conn
        .query_row("SELECT subject FROM outbox", [], |row| row.get(0))
        .unwrap();
    assert_eq!(subject, format!("Thanks for your order #{order_id}"));
    for table in ["orders", "billing", "audit_log", "outbox"] {
        assert_eq!(count(&conn, table), 1, "{table}");
    }
}

#[test]
fn a_declined_card_rolls_back_the_order_and_every_handlers_rows() {
    let mut conn = database();
    let error =
        place_order(&mut conn, &MAILER, "bob@example.com", 1999, DECLINED_CARD).unwrap_err();

    let PlaceOrderError::Handler(error) = error else {
        panic!("expected a handler error, got {error:?}");
    };
    assert_eq!(
        error.handler().name(),
        "shop_handlers::billing::create_billing_record"
    );
    assert!(matches!(
        error.downcast_ref::<BillingError>(),
        Some(BillingError::CardDeclined { last4 }) if last4 == "0002"
    ));
    // The audit handler ran before billing failed; its row rolled back with the order.
    for table in ["orders", "billing", "audit_log", "outbox"] {
        assert_eq!(count(&conn, table), 0, "{table}");
    }
}

#[test]
fn help_lists_every_option_it_accepts() {
    assert_eq!(parse_args(["--help"]), Ok(Mode::Help));
    assert_eq!(parse_args(["-h"]), Ok(Mode::Help));
    let options = [
        ("--decline-card", Mode::Orders { decline_only: true }),
        ("--wiring", Mode::Wiring { mermaid: false }),
        ("--wiring=mermaid", Mode::Wiring { mermaid: true }),
        ("-h, --help", Mode::Help),
    ];
    for (option, mode) in options {
        assert!(
            USAGE.contains(&format!("  {option}  ")),
            "{option} in\n{USAGE}"
        );
        let flag = option.rsplit(' ').next().unwrap();
        assert_eq!(parse_args([flag]), Ok(mode), "{flag}");
    }
}

#[test]
fn no_arguments_place_both_orders() {
    assert_eq!(
        parse_args(Vec::<String>::new()),
        Ok(Mode::Orders {
            decline_only: false
        })
    );
}

#[test]
fn help_wins_over_every_other_option_and_wiring_over_decline_card() {
    assert_eq!(
        parse_args(["--wiring", "--decline-card", "--help"]),
        Ok(Mode::Help)
    );
    assert_eq!(
        parse_args(["--decline-card", "--wiring=mermaid"]),
        Ok(Mode::Wiring { mermaid: true })
    );
}

#[test]
fn an_unknown_argument_is_an_error_naming_it() {
    for arg in ["--decline", "--wiring=dot", "help", "-x"] {
        assert_eq!(
            parse_args(["--decline-card", arg]),
            Err(format!("unknown argument `{arg}`"))
        );
    }
}
