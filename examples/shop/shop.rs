//! The shop as a command-line program over SQLite or PostgreSQL, so that crash and scale
//! behaviour can be checked from outside: place orders, run workers (and kill them), read the
//! counts.
//!
//! ```text
//! cargo run --example shop -- migrate
//! cargo run --example shop -- --db postgres://postgres@127.0.0.1/test migrate
//! cargo run --example shop -- place --orders 1000 --decline-every 7
//! cargo run --example shop -- worker --concurrency 2 --until-idle --email-fail-rate 0.2
//! cargo run --example shop -- stats
//! cargo run --example shop -- retry-dead
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use signals_broker::Relay;
use signals_examples_shop::{
    migrate, place_order, stats, Mailer, PlaceOrderError, DECLINED_CARD, GOOD_CARD,
};
use signals_queue::{AsyncQueue, AsyncWorker, Pool, RetryPolicy};

/// What `--help` prints.
pub const USAGE: &str = "\
usage: shop [--db URL] <command> [options]
       (from the workspace: cargo run --example shop -- [--db URL] <command> [options])

  --db URL   the database: sqlite://PATH (a file; created if missing; the default is
             sqlite://shop.db) or postgres://USER@HOST[:PORT]/DATABASE

commands:
  migrate                      create the shop's tables and the jobs table
  place --orders N             place N orders, each in its own transaction
        [--decline-every K]    every K-th order's card is declined: it rolls back
  worker                       run the worker: the queued handlers below, and the periodic
                               signals while it leads (after `migrate`: it creates no table)
        [--concurrency C]      jobs at once (default 1; any number up to 1000: a job holds a
                               connection only while it writes)
        [--pool N]             database connections for the handlers (default 10); the
                               worker opens 4 more of its own (3 on SQLite)
        [--until-idle]         exit once no email job is pending or running (otherwise
                               run until Ctrl-C or SIGTERM, then shut down gracefully)
        [--email-fail-rate P]  the mail provider fails a call with probability P (default 0)
        [--email-delay-ms D]   each call to the provider takes D ms (default 0)
        [--retry-base-ms B]    the first retry's delay ceiling (default 100)
        [--lease-ms L]         the worker's lease; renewed every third of it (default 5000)
        [--job-timeout-ms T]   an attempt running longer fails and is retried (default
                               300000)
        [--crash-on-order ID]  a test hook: the welcome email of order ID calls
                               `std::process::abort()` before the provider is called, so the
                               job takes its worker down every time it runs
        [--nats URL]           also publish `OrderCreatedMessage`s from the outbox to NATS
                               JetStream (e.g. nats://127.0.0.1:4222); without it they wait
        [--stream NAME]        the JetStream stream (default SHOP), created if missing
        [--subject-prefix P]   put P before every subject (default none)
        [--metrics-listen A]   serve the queue's metrics as Prometheus text at
                               http://A/metrics (e.g. 127.0.0.1:9464)
  stats                        print counts as one JSON object (its jobs counts are
                               the welcome email's; \"ticks\": heartbeat rows, distinct ticks)
  retry-dead                   make dead jobs pending again, attempts reset

queued handlers (each order writes their jobs in its transaction; `worker` runs them):
  send_welcome_email           at once, up to 5 attempts
  send_follow_up_email         three days later: a delayed handler (`delay = \"3d\"`); until
                               then no claim reads it and `worker --until-idle` does not wait
  write_nightly_report         on the \"reports\" queue, when `NightlyReport` fires

periodic signals (the fleet's leader fires each tick once, whichever workers run):
  Heartbeat                    every second (`every = \"1s\"`): `record_heartbeat` writes
                               one row per tick (`stats` counts them under \"ticks\")
  NightlyReport                at 03:00 UTC (`cron = \"0 3 * * *\"`): queues the report
";

/// A parsed command line.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `migrate`.
    Migrate,
    /// `place --orders N [--decline-every K]`.
    Place {
        /// How many orders.
        orders: u64,
        /// Every K-th is declined (0: none).
        decline_every: u64,
    },
    /// `worker ...`.
    Worker(WorkerOptions),
    /// `stats`.
    Stats,
    /// `retry-dead`.
    RetryDead,
    /// `--help`.
    Help,
}

/// The options of `shop worker`.
#[derive(Debug, PartialEq)]
pub struct WorkerOptions {
    /// Jobs at once.
    pub concurrency: usize,
    /// Connections for the handlers.
    pub pool: u32,
    /// How long an attempt may run.
    pub job_timeout: Duration,
    /// The order whose email aborts the process.
    pub crash_on_order: Option<i64>,
    /// Exit once idle.
    pub until_idle: bool,
    /// The provider's failure probability.
    pub email_fail_rate: f64,
    /// Each call's duration.
    pub email_delay: Duration,
    /// The first retry's delay ceiling.
    pub retry_base: Duration,
    /// The claim's lease.
    pub lease: Duration,
    /// Where to publish the outbox's messages, if anywhere.
    pub nats: Option<String>,
    /// The stream.
    pub stream: String,
    /// Put before every subject.
    pub subject_prefix: String,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Reads the arguments after the program name: the database URL and the command.
pub fn parse_args(args: &[String]) -> Result<(String, Command), String> {
    let mut db = "sqlite://shop.db".to_owned();
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok((String::new(), Command::Help)),
            "--db" => db = args.next().ok_or("`--db` needs a URL")?.clone(),
            _ => rest.push(arg.as_str()),
        }
    }
    check_url(&db)?;
    let Some((&command, options)) = rest.split_first() else {
        return Err("missing command".to_owned());
    };
    let mut options = Options::new(options);
    let command = match command {
        "migrate" => Command::Migrate,
        "place" => Command::Place {
            orders: options
                .value("--orders")?
                .ok_or("`place` needs `--orders N`")?,
            decline_every: options.value("--decline-every")?.unwrap_or(0),
        },
        "worker" => Command::Worker(WorkerOptions {
            concurrency: match options.value("--concurrency")?.unwrap_or(1) {
                c @ 1..=1000 => c,
                _ => return Err("`--concurrency` is 1 to 1000".to_owned()),
            },
            pool: match options.value("--pool")?.unwrap_or(10) {
                0 => return Err("`--pool` needs at least 1 connection".to_owned()),
                n => n,
            },
            job_timeout: Duration::from_millis(
                options.value("--job-timeout-ms")?.unwrap_or(300_000),
            ),
            crash_on_order: options.value("--crash-on-order")?,
            until_idle: options.flag("--until-idle"),
            email_fail_rate: options.value("--email-fail-rate")?.unwrap_or(0.0),
            email_delay: Duration::from_millis(options.value("--email-delay-ms")?.unwrap_or(0)),
            retry_base: Duration::from_millis(options.value("--retry-base-ms")?.unwrap_or(100)),
            lease: Duration::from_millis(options.value("--lease-ms")?.unwrap_or(5000)),
            nats: options.value("--nats")?,
            stream: options
                .value("--stream")?
                .unwrap_or_else(|| "SHOP".to_owned()),
            subject_prefix: options.value("--subject-prefix")?.unwrap_or_default(),
            metrics_listen: options.value("--metrics-listen")?,
        }),
        "stats" => Command::Stats,
        "retry-dead" => Command::RetryDead,
        other => return Err(format!("unknown command `{other}`")),
    };
    options.finish()?;
    Ok((db, command))
}

/// A `sqlite://PATH` or `postgres://...` URL; any other scheme is an error saying what works.
fn check_url(url: &str) -> Result<(), String> {
    if url == "sqlite://" {
        return Err("`--db sqlite://` needs a path: `--db sqlite://shop.db`".to_owned());
    }
    match ["sqlite://", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        true => Ok(()),
        false => Err(format!(
            "`--db {url}`: expected a URL such as `sqlite://shop.db` or `postgres://postgres@127.0.0.1/shop`"
        )),
    }
}

/// A command's options: `--name value` pairs and flags, each read once.
struct Options<'a> {
    args: Vec<Option<&'a str>>,
}

impl<'a> Options<'a> {
    fn new(args: &[&'a str]) -> Self {
        Options {
            args: args.iter().map(|&arg| Some(arg)).collect(),
        }
    }

    fn flag(&mut self, name: &str) -> bool {
        let found = self.args.iter().position(|arg| *arg == Some(name));
        found.map(|at| self.args[at] = None).is_some()
    }

    fn value<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        let Some(at) = self.args.iter().position(|arg| *arg == Some(name)) else {
            return Ok(None);
        };
        self.args[at] = None;
        let value = self.args.get_mut(at + 1).and_then(Option::take);
        let value = value.ok_or_else(|| format!("`{name}` needs a value"))?;
        value
            .parse()
            .map(Some)
            .map_err(|_| format!("`{name} {value}`: not a valid value"))
    }

    fn finish(self) -> Result<(), String> {
        match self.args.into_iter().flatten().next() {
            Some(unknown) => Err(format!("unknown argument `{unknown}`")),
            None => Ok(()),
        }
    }
}

async fn run(url: &str, command: Command) -> Result<(), signals_core::BoxError> {
    if command == Command::Help {
        print!("{USAGE}");
        return Ok(());
    }
    let connections = match &command {
        Command::Worker(options) => options.pool,
        _ => 2,
    };
    let pool = Pool::connect(url, connections).await?;
    match command {
        Command::Help => {}
        Command::Migrate => migrate(&pool).await?,
        Command::Place {
            orders,
            decline_every,
        } => place(&pool, orders, decline_every).await?,
        Command::Worker(options) => worker(pool, options).await?,
        Command::Stats => println!("{}", stats(&pool).await?),
        Command::RetryDead => {
            let retried = AsyncQueue::new(pool).retry_dead().await?;
            println!("{retried} dead job(s) pending again");
        }
    }
    Ok(())
}

async fn place(pool: &Pool, orders: u64, decline_every: u64) -> Result<(), signals_core::BoxError> {
    migrate(pool).await?;
    // `place` never sends email: the queued handler runs on the worker.
    let mailer = Mailer::simulated(0.0, Duration::ZERO, None);
    let (mut committed, mut declined) = (0, 0);
    for i in 1..=orders {
        let declines = decline_every > 0 && i % decline_every == 0;
        let card = if declines { DECLINED_CARD } else { GOOD_CARD };
        let email = format!("customer{i}@example.com");
        match place_order(pool, &mailer, &email, 1000 + i as i64, card).await {
            Ok(_) => committed += 1,
            Err(PlaceOrderError::Handler(_)) if declines => declined += 1,
            Err(error) => return Err(error.into()),
        }
    }
    println!("placed {committed} order(s); {declined} declined and rolled back");
    Ok(())
}

/// Runs the worker. It creates nothing (`shop migrate` does): a role without DDL rights runs it.
async fn worker(pool: Pool, options: WorkerOptions) -> Result<(), signals_core::BoxError> {
    if let Some(address) = options.metrics_listen {
        // The queue reports through the `metrics` facade; this exporter serves it over HTTP.
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(address)
            .install()?;
    }
    let mailer = Mailer::simulated(
        options.email_fail_rate,
        options.email_delay,
        Some(pool.clone()),
    )
    .crash_on_order(options.crash_on_order);
    let relay = match &options.nats {
        Some(url) => Some(relay(&pool, url, &options).await?),
        None => None,
    };
    let worker = AsyncWorker::builder(pool)
        .state(Arc::new(mailer))
        .concurrency(options.concurrency)
        // The nightly report runs in a slot of its own: it takes none of the emails' slots,
        // and never waits behind a burst of them.
        .queue("reports", 1)
        .lease(options.lease)
        .job_timeout(options.job_timeout)
        .retry(RetryPolicy {
            base: options.retry_base,
            cap: options.retry_base * 32,
        })
        .build()
        .await?;
    let relay = relay.map(Relay::start);
    if options.until_idle {
        // Emails first, then the messages still waiting in the outbox (without `--nats` they
        // wait for a worker that publishes).
        worker.run_until_idle().await?;
        if let Some(relay) = relay {
            relay.wait_idle().await?;
            relay.shutdown(Duration::from_secs(30)).await;
        }
        return Ok(());
    }
    let running = worker.start();
    signals_examples_shop::shutdown_signal().await;
    running.shutdown(Duration::from_secs(30)).await?;
    if let Some(relay) = relay {
        relay.shutdown(Duration::from_secs(30)).await;
    }
    Ok(())
}

/// The relay from the outbox to JetStream, with the stream created if missing.
async fn relay(
    pool: &Pool,
    url: &str,
    options: &WorkerOptions,
) -> Result<Relay, signals_core::BoxError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|error| format!("NATS at {url}: {error}"))?;
    let subjects = format!("{}shop.>", options.subject_prefix);
    Ok(Relay::builder(pool.clone(), client)
        .create_stream(&options.stream, &[&subjects])
        .subject_prefix(&options.subject_prefix)
        .lease(options.lease)
        .retry(RetryPolicy {
            base: options.retry_base,
            cap: options.retry_base * 32,
        })
        .build()
        .await?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, command) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("shop: {message} (see `shop --help`)");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(&url, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = error.to_string().replace('\n', " ");
            eprintln!("shop: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}
