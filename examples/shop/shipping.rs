//! A second service: shipping, with a database of its own, consumes the shop's
//! `shop.orders.created` messages from NATS JetStream as a signal and records one shipment per
//! order, exactly once per message however often JetStream delivers it.
//!
//! ```text
//! cargo run --example shipping -- migrate
//! cargo run --example shipping -- run --until-idle
//! cargo run --example shipping -- stats
//! cargo run --example shipping -- delete-stream
//! ```
//!
//! Its signal is the message as it arrives, an ordinary signal with an ordinary handler; a
//! `Subscriber` binds a durable JetStream consumer to it.

use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;
use signals_broker::{inbox_stats, Subscriber};
use signals_core::{on, BoxError, Signal};
use signals_queue::{with_db, AsyncJobScope, AsyncQueue, FromJobAsync, Pool, Tx};

/// What `--help` prints.
const USAGE: &str = "\
usage: shipping [--db URL] [--nats URL] [--stream NAME] [--subject-prefix P] <command>
       (from the workspace: cargo run --example shipping -- [options] <command>)

  --db URL            shipping's own database: sqlite://PATH (default sqlite://shipping.db)
                      or postgres://...
  --nats URL          the NATS server (default nats://127.0.0.1:4222)
  --stream NAME       the JetStream stream the shop publishes to (default SHOP)
  --subject-prefix P  put P before the subject, as the shop's worker does (default none)

commands:
  migrate             create shipping's tables and the inbox
  run [--until-idle]  consume shop.orders.created; with --until-idle, exit once no message is
                      pending or unacknowledged (otherwise run until Ctrl-C or SIGTERM)
  stats               print {\"shipments\": n, \"messages_seen\": n, \"dead\": n}
  delete-stream       delete the stream and every message in it (tears the demo down)
";

/// What a shipping handler receives: the transaction its message is applied in.
pub struct ShipCtx<'a> {
    tx: Tx<'a>,
}

impl<'c> FromJobAsync<'c> for ShipCtx<'c> {
    fn from_job(job: AsyncJobScope<'c>) -> Result<Self, BoxError> {
        Ok(ShipCtx {
            tx: job.transaction(),
        })
    }
}

/// The shop's message, as shipping reads it.
#[derive(Signal, Deserialize, Debug)]
#[signal(context = ShipCtx<'_>, asynchronous)]
pub struct OrderCreatedMessage {
    /// The order to ship.
    pub order_id: i64,
}

/// One shipment per order; it commits with the message's inbox row, or not at all.
#[on(OrderCreatedMessage)]
async fn record_shipment(
    sig: &OrderCreatedMessage,
    ctx: &mut ShipCtx<'_>,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO shipments (order_id) VALUES ($1)";
    with_db!(&mut ctx.tx, |conn| sqlx::query(sql)
        .bind(sig.order_id)
        .execute(conn)
        .await
        .map(drop))
}

/// The durable consumer's name, and the inbox's.
const CONSUMER: &str = "shipping";

struct Options {
    db: String,
    nats: String,
    stream: String,
    prefix: String,
    command: String,
    until_idle: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        db: "sqlite://shipping.db".into(),
        nats: "nats://127.0.0.1:4222".into(),
        stream: "SHOP".into(),
        prefix: String::new(),
        command: String::new(),
        until_idle: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or(format!("`{name}` needs a value"))
        };
        match arg.as_str() {
            "--db" => options.db = value("--db")?,
            "--nats" => options.nats = value("--nats")?,
            "--stream" => options.stream = value("--stream")?,
            "--subject-prefix" => options.prefix = value("--subject-prefix")?,
            "--until-idle" => options.until_idle = true,
            "-h" | "--help" => options.command = "help".into(),
            command if options.command.is_empty() && !command.starts_with('-') => {
                options.command = command.into();
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    match options.command.as_str() {
        "migrate" | "run" | "stats" | "delete-stream" | "help" => Ok(options),
        "" => Err("missing command".into()),
        other => Err(format!("unknown command `{other}`")),
    }
}

async fn migrate(pool: &Pool) -> Result<(), BoxError> {
    AsyncQueue::new(pool.clone()).migrate().await?;
    let sql = "CREATE TABLE IF NOT EXISTS shipments (order_id BIGINT NOT NULL)";
    with_db!(pool, |pool| sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .map(drop))?;
    Ok(())
}

async fn run(options: Options) -> Result<(), BoxError> {
    if options.command == "help" {
        print!("{USAGE}");
        return Ok(());
    }
    if options.command == "delete-stream" {
        let client = connect(&options.nats).await?;
        async_nats::jetstream::new(client)
            .delete_stream(&options.stream)
            .await
            .map_err(|error| format!("deleting stream {}: {error}", options.stream))?;
        return Ok(());
    }
    let pool = Pool::connect(&options.db, 4).await?;
    migrate(&pool).await?;
    match options.command.as_str() {
        "migrate" => Ok(()),
        "stats" => {
            let sql = "SELECT COUNT(*) FROM shipments";
            let shipments: i64 = with_db!(&pool, |pool| sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await?);
            let inbox = inbox_stats(&pool, CONSUMER).await?;
            println!(
                r#"{{"shipments": {shipments}, "messages_seen": {}, "dead": {}}}"#,
                inbox.done + inbox.dead,
                inbox.dead
            );
            Ok(())
        }
        _ => {
            let client = connect(&options.nats).await?;
            let subjects = format!("{}shop.>", options.prefix);
            let subject = format!("{}shop.orders.created", options.prefix);
            let subscriber = Subscriber::<OrderCreatedMessage>::builder(
                pool,
                client,
                &options.stream,
                CONSUMER,
                subject,
            )
            .create_stream(&[&subjects])
            .ack_wait(Duration::from_secs(5))
            .build()
            .await?;
            if options.until_idle {
                subscriber.run_until_idle().await?;
                return Ok(());
            }
            let stop = subscriber.stopper();
            let running = tokio::spawn(subscriber.run());
            let _ = tokio::signal::ctrl_c().await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            running.await??;
            Ok(())
        }
    }
}

async fn connect(url: &str) -> Result<async_nats::Client, BoxError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|error| format!("NATS at {url}: {error}"))?;
    Ok(client)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("shipping: {message} (see `shipping --help`)");
            return ExitCode::from(2);
        }
    };
    // What an error is about: the database, or NATS for the command that touches only NATS.
    let db = match options.command.as_str() {
        "delete-stream" => options.nats.clone(),
        _ => options.db.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shipping: {db}: {}", error.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
