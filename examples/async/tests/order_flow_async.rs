//! The async order flow example's own code, tested: commit keeps every handler's rows, a
//! declined card rolls back the order and every row its async handlers wrote, and the command
//! line.

#[allow(dead_code, reason = "the example's `main` is not called here")]
#[path = "../order_flow_async.rs"]
mod order_flow_async;

use order_flow_async::{
    database, parse_args, place_order, row_counts, BillingError, Mailer, Mode, PlaceOrderError,
    DECLINED_CARD, GOOD_CARD, USAGE,
};

fn on_runtime<F: std::future::Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test)
}

#[test]
fn a_committed_order_keeps_every_handlers_rows() {
    on_runtime(async {
        let pool = database().await.unwrap();
        place_order(&pool, &Mailer, "ada@example.com", 4200, GOOD_CARD)
            .await
            .unwrap();
        let counts = row_counts(&pool).await.unwrap();
        assert_eq!(
            counts,
            [
                ("orders", 1),
                ("billing", 1),
                ("audit_log", 1),
                ("outbox", 1)
            ]
        );
    });
}

#[test]
fn a_declined_card_rolls_back_the_order_and_every_handlers_rows() {
    on_runtime(async {
        let pool = database().await.unwrap();
        let error = place_order(&pool, &Mailer, "bob@example.com", 1999, DECLINED_CARD)
            .await
            .unwrap_err();
        let PlaceOrderError::Handler(error) = error else {
            panic!("expected a handler error, got {error:?}");
        };
        // This test includes the example as a module, so the path has one more segment.
        assert!(error
            .handler()
            .name()
            .ends_with("order_flow_async::create_billing_record"));
        assert!(matches!(
            error.downcast_ref::<BillingError>(),
            Some(BillingError::CardDeclined { last4 }) if last4 == "0002"
        ));
        // The audit handler wrote its row before billing failed; it rolled back too.
        let counts = row_counts(&pool).await.unwrap();
        assert_eq!(
            counts,
            [
                ("orders", 0),
                ("billing", 0),
                ("audit_log", 0),
                ("outbox", 0)
            ]
        );
    });
}

#[test]
fn help_is_the_only_option() {
    assert!(USAGE.contains("  -h, --help  "), "{USAGE}");
    assert_eq!(parse_args(["--help"]), Ok(Mode::Help));
    assert_eq!(parse_args(["-h"]), Ok(Mode::Help));
    assert_eq!(parse_args(Vec::<String>::new()), Ok(Mode::Orders));
    assert_eq!(
        parse_args(["--decline-card"]),
        Err("unknown argument `--decline-card`".to_owned())
    );
}
