//! `#[on(S, when = filter)]`: the handler runs only when the filter accepts the signal (and,
//! if it asks for it, the context).

use signals_core::{catalog, handlers, notify, notify_async, on, Signal};

#[derive(Default)]
struct Shop {
    log: Vec<String>,
    vip_threshold: u64,
}

#[derive(Signal)]
#[signal(context = Shop)]
struct OrderCreated {
    total: u64,
}

fn is_large_order(sig: &OrderCreated) -> bool {
    sig.total >= 1_000
}

fn is_vip_order(sig: &OrderCreated, shop: &Shop) -> bool {
    sig.total >= shop.vip_threshold
}

#[on(OrderCreated, priority = 3)]
fn every_order(sig: &OrderCreated, shop: &mut Shop) {
    shop.log.push(format!("order {}", sig.total));
}

#[on(OrderCreated, priority = 2, when = is_large_order)]
fn review_large_order(sig: &OrderCreated, shop: &mut Shop) {
    shop.log.push(format!("review {}", sig.total));
}

#[on(OrderCreated, priority = 1, when = is_vip_order)]
fn thank_vip(sig: &OrderCreated, shop: &mut Shop) -> Result<(), std::io::Error> {
    shop.log.push(format!("vip {}", sig.total));
    Ok(())
}

#[on(OrderCreated, when = |sig: &OrderCreated| sig.total % 2 == 1)]
fn odd_total(sig: &OrderCreated, shop: &mut Shop) {
    shop.log.push(format!("odd {}", sig.total));
}

fn run(total: u64) -> Vec<String> {
    let mut shop = Shop {
        log: Vec::new(),
        vip_threshold: 500,
    };
    notify(&OrderCreated { total }, &mut shop).unwrap();
    shop.log
}

#[test]
fn filters_decide_which_handlers_run() {
    assert_eq!(run(10), ["order 10"]);
    assert_eq!(run(501), ["order 501", "vip 501", "odd 501"]);
    assert_eq!(run(2_000), ["order 2000", "review 2000", "vip 2000"]);
}

#[test]
fn handlers_and_the_catalog_show_their_filters() {
    let filters: Vec<_> = handlers::<OrderCreated>().map(|h| h.filter()).collect();
    assert_eq!(
        filters,
        [
            None,
            Some("is_large_order"),
            Some("is_vip_order"),
            Some("|sig: &OrderCreated| sig.total % 2 == 1"),
        ]
    );
    let names: Vec<_> = handlers::<OrderCreated>().map(|h| h.name()).collect();
    assert_eq!(names[1], "filters::review_large_order");
    let table = catalog().to_string();
    assert!(
        table.contains("filters::review_large_order when is_large_order  "),
        "{table}"
    );
}

#[derive(Signal)]
#[signal(context = Vec<u64>, asynchronous)]
struct Payment {
    amount: u64,
}

#[on(Payment, when = |p: &Payment| p.amount > 0)]
async fn record_payment(sig: &Payment, log: &mut Vec<u64>) {
    log.push(sig.amount);
}

#[test]
fn async_handlers_take_filters_too() {
    let mut log = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        notify_async(&Payment { amount: 0 }, &mut log)
            .await
            .unwrap();
        notify_async(&Payment { amount: 7 }, &mut log)
            .await
            .unwrap();
    });
    assert_eq!(log, [7]);
}
