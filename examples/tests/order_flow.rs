//! The order flow example's own code, tested: commit writes every handler's rows and the email's
//! job, a declined card rolls back the order, every row its handlers wrote and the job, the
//! worker sends the email after commit with a retry, and the command line.

#[allow(dead_code, reason = "the example's `main` is not called here")]
#[path = "../order_flow.rs"]
mod order_flow;

use std::sync::Arc;
use std::time::Duration;

use order_flow::{parse_args, Mode, USAGE};
use rusqlite::Connection;
use shop_handlers::BillingError;
use shop_signals::{migrate, place_order, Mailer, PlaceOrderError, DECLINED_CARD, GOOD_CARD};
use signals_queue::{RetryPolicy, Worker};

/// A database file of its own (the worker opens its own connections), kept while `TempDir` is.
fn database() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = migrate(&dir.path().join("shop.db")).unwrap();
    (dir, conn)
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

#[test]
fn a_committed_order_keeps_every_handlers_rows_and_its_email_job() {
    let (_dir, mut conn) = database();
    let mailer = Mailer::flaky("shop@example.com");
    let order_id = place_order(&mut conn, &mailer, "ada@example.com", 4200, GOOD_CARD).unwrap();

    let billed: i64 = conn
        .query_row(
            "SELECT amount_cents FROM billing WHERE order_id = ?1",
            [order_id],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(billed, 4200);
    let (handler, state): (String, String) = conn
        .query_row("SELECT handler, state FROM signals_jobs", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(handler, "shop_handlers::email::send_welcome_email");
    assert_eq!(state, "pending");
    for table in ["orders", "billing", "audit_log", "signals_jobs"] {
        assert_eq!(count(&conn, table), 1, "{table}");
    }
    // Queued: nothing was sent inside the transaction.
    assert_eq!(mailer.attempts(), 0);
}

#[test]
fn a_declined_card_rolls_back_the_order_every_handlers_rows_and_the_email_job() {
    let (_dir, mut conn) = database();
    let mailer = Mailer::flaky("shop@example.com");
    let error =
        place_order(&mut conn, &mailer, "bob@example.com", 1999, DECLINED_CARD).unwrap_err();

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
    for table in ["orders", "billing", "audit_log", "signals_jobs"] {
        assert_eq!(count(&conn, table), 0, "{table}");
    }
}

#[test]
fn the_worker_sends_committed_orders_email_once_retrying_the_flaky_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let mut conn = migrate(&path).unwrap();
    let mailer = Arc::new(Mailer::flaky("shop@example.com"));
    place_order(&mut conn, &mailer, "ada@example.com", 4200, GOOD_CARD).unwrap();
    place_order(&mut conn, &mailer, "bob@example.com", 1999, DECLINED_CARD).unwrap_err();
    Worker::builder(&path)
        .state(Arc::clone(&mailer))
        .retry(RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(10),
        })
        .build()
        .unwrap()
        .run_until_idle()
        .unwrap();
    assert_eq!(
        mailer.delivered(),
        ["ada@example.com: Thanks for your order #1"]
    );
    assert_eq!(
        mailer.attempts(),
        2,
        "the first call timed out and was retried"
    );
    let (state, attempt): (String, i64) = conn
        .query_row("SELECT state, attempt FROM signals_jobs", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), attempt), ("done", 2));
    assert_eq!(
        count(&conn, "emails"),
        1,
        "one row, written with the successful attempt"
    );
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
