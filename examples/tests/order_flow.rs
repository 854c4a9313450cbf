//! The order flow example's own code, tested: commit writes every handler's rows, a declined
//! card rolls back the order and every row its handlers wrote.

#[allow(dead_code, reason = "the example's `main` is not called here")]
#[path = "../order_flow.rs"]
mod order_flow;

use order_flow::{place_order, PlaceOrderError, DECLINED_CARD, GOOD_CARD, SCHEMA};
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
