//! The shop as one axum service: the HTTP server, the queue's worker and (with `--nats`) the
//! outbox relay in one process, stopped together by one Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run -p signals-examples-shop --example in_process -- --db sqlite://shop.db --listen 127.0.0.1:3000
//! curl -X POST 'http://127.0.0.1:3000/orders?email=ada@example.com&total_cents=1200'
//! ```
//!
//! `POST /orders` inserts the order and notifies `OrderCreated` in the request's transaction:
//! the welcome email is a job that commits with the order, and the worker of this same process
//! sends it. On SIGTERM the server stops taking requests and finishes the ones in flight, the
//! worker stops claiming and lets its running jobs finish (30 s at most), and the relay
//! publishes what it holds; then the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use futures_util::FutureExt as _;
use serde::Deserialize;
use signals_broker::Relay;
use signals_examples_shop::{migrate, place_order, Mailer, PlaceOrderError, GOOD_CARD};
use signals_queue::{AsyncWorker, Pool};

/// What a request handler needs.
#[derive(Clone)]
struct App {
    pool: Pool,
    mailer: Arc<Mailer>,
}

#[derive(Deserialize)]
struct NewOrder {
    email: String,
    total_cents: i64,
}

/// `POST /orders?email=…&total_cents=…`: the order's id, or why it was not placed.
async fn create_order(
    State(app): State<App>,
    Query(order): Query<NewOrder>,
) -> Result<String, (StatusCode, String)> {
    match place_order(
        &app.pool,
        &app.mailer,
        &order.email,
        order.total_cents,
        GOOD_CARD,
    )
    .await
    {
        Ok(id) => Ok(format!("{id}\n")),
        Err(PlaceOrderError::Handler(error)) => {
            Err((StatusCode::UNPROCESSABLE_ENTITY, format!("{error}\n")))
        }
        Err(error) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))),
    }
}

/// `--db URL --listen ADDR [--nats URL]`.
struct Options {
    db: String,
    listen: SocketAddr,
    nats: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        db: "sqlite://shop.db".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        nats: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => options.db = value()?,
            "--listen" => {
                let value = value()?;
                options.listen = value.parse().map_err(|_| format!("--listen {value}"))?;
            }
            "--nats" => options.nats = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), signals_core::BoxError> {
    let options = options()?;
    let pool = Pool::connect(&options.db, 10).await?;
    migrate(&pool).await?;
    let mailer = Arc::new(Mailer::simulated(0.0, Duration::ZERO, None));

    // One signal, three listeners: `shared()` makes the future cloneable.
    let shutdown = signals_examples_shop::shutdown_signal().shared();
    let grace = Duration::from_secs(30);

    let worker = AsyncWorker::builder(pool.clone())
        .state(Arc::clone(&mailer))
        .concurrency(16)
        .build()
        .await?
        .start();
    let relay = match &options.nats {
        Some(url) => {
            let client = async_nats::connect(url.as_str()).await?;
            let relay = Relay::builder(pool.clone(), client)
                .create_stream("SHOP", &["shop.>"])
                .build()
                .await?;
            Some(relay.start())
        }
        None => None,
    };

    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(App { pool, mailer });
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone());

    let relay = async {
        if let Some(relay) = relay {
            relay.run_until(shutdown.clone(), grace).await;
        }
    };
    let (served, worked, ()) =
        tokio::join!(server, worker.run_until(shutdown.clone(), grace), relay);
    served?;
    let stats = worked?;
    println!(
        "stopped: {} jobs completed",
        stats.completed_in_batches + stats.completed_with_writes
    );
    Ok(())
}
