//! The shop as a command-line program over a database file, so that crash and scale behaviour
//! can be checked from outside: place orders, run workers (and kill them), read the counts.
//!
//! ```text
//! cargo run --example shop -- migrate
//! cargo run --example shop -- place --orders 1000 --decline-every 7
//! cargo run --example shop -- worker --concurrency 2 --until-idle --email-fail-rate 0.2
//! cargo run --example shop -- stats
//! cargo run --example shop -- retry-dead
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shop_signals::{migrate, place_order, Mailer, PlaceOrderError, DECLINED_CARD, GOOD_CARD};
use signals_queue::{JobState, Queue, RetryPolicy, Worker};

// Links the handlers: billing, the audit log, and the queued welcome email.
use shop_handlers as _;

/// What `--help` prints.
pub const USAGE: &str = "\
usage: shop [--db URL] <command> [options]
       (from the workspace: cargo run --example shop -- [--db URL] <command> [options])

  --db URL   the database, default sqlite://shop.db (a file; created if missing)

commands:
  migrate                      create the shop's tables and the jobs table
  place --orders N             place N orders, each in its own transaction
        [--decline-every K]    every K-th order's card is declined: it rolls back
  worker                       run the worker for the queued welcome email
        [--concurrency C]      jobs at once (default 1)
        [--until-idle]         exit once no email job is pending or running
        [--email-fail-rate P]  the mail provider fails a call with probability P (default 0)
        [--email-delay-ms D]   each call to the provider takes D ms (default 0)
        [--retry-base-ms B]    the first retry's delay ceiling (default 100)
        [--lease-ms L]         the lease a claim takes; heartbeats renew it (default 5000)
  stats                        print counts as one JSON object
  retry-dead                   make dead jobs pending again, attempts reset
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
}

/// Reads the arguments after the program name: the database path and the command.
pub fn parse_args(args: &[String]) -> Result<(PathBuf, Command), String> {
    let mut db = "sqlite://shop.db".to_owned();
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok((PathBuf::new(), Command::Help)),
            "--db" => db = args.next().ok_or("`--db` needs a URL")?.clone(),
            _ => rest.push(arg.as_str()),
        }
    }
    let path = database_path(&db)?;
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
            concurrency: options.value("--concurrency")?.unwrap_or(1),
            until_idle: options.flag("--until-idle"),
            email_fail_rate: options.value("--email-fail-rate")?.unwrap_or(0.0),
            email_delay: Duration::from_millis(options.value("--email-delay-ms")?.unwrap_or(0)),
            retry_base: Duration::from_millis(options.value("--retry-base-ms")?.unwrap_or(100)),
            lease: Duration::from_millis(options.value("--lease-ms")?.unwrap_or(5000)),
        }),
        "stats" => Command::Stats,
        "retry-dead" => Command::RetryDead,
        other => return Err(format!("unknown command `{other}`")),
    };
    options.finish()?;
    Ok((path, command))
}

/// The file of a `sqlite://` URL; any other scheme is an error saying what works.
fn database_path(url: &str) -> Result<PathBuf, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return match path.is_empty() {
            true => Err("`--db sqlite://` needs a path: `--db sqlite://shop.db`".to_owned()),
            false => Ok(PathBuf::from(path)),
        };
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err("PostgreSQL is not supported yet: signals-queue runs on SQLite in this version (`--db sqlite://PATH`)".to_owned());
    }
    Err(format!(
        "`--db {url}`: expected a URL such as `sqlite://shop.db`"
    ))
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

fn run(path: &std::path::Path, command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Help => print!("{USAGE}"),
        Command::Migrate => {
            migrate(path)?;
        }
        Command::Place {
            orders,
            decline_every,
        } => place(path, orders, decline_every)?,
        Command::Worker(options) => worker(path, options)?,
        Command::Stats => println!("{}", stats(path)?),
        Command::RetryDead => {
            let retried = Queue::open(path)?.retry_dead()?;
            println!("{retried} dead job(s) pending again");
        }
    }
    Ok(())
}

fn place(
    path: &std::path::Path,
    orders: u64,
    decline_every: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = migrate(path)?;
    let mailer = Mailer::flaky("shop@example.com");
    let (mut committed, mut declined) = (0, 0);
    for i in 1..=orders {
        let declines = decline_every > 0 && i % decline_every == 0;
        let card = if declines { DECLINED_CARD } else { GOOD_CARD };
        let email = format!("customer{i}@example.com");
        match place_order(&mut conn, &mailer, &email, 1000 + i as i64, card) {
            Ok(_) => committed += 1,
            Err(PlaceOrderError::Handler(_)) if declines => declined += 1,
            Err(error) => return Err(error.into()),
        }
    }
    println!("placed {committed} order(s); {declined} declined and rolled back");
    Ok(())
}

fn worker(
    path: &std::path::Path,
    options: WorkerOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    migrate(path)?;
    let mailer = Mailer::simulated(
        "shop@example.com",
        options.email_fail_rate,
        options.email_delay,
        path.to_owned(),
    );
    let worker = Worker::builder(path)
        .state(Arc::new(mailer))
        .concurrency(options.concurrency)
        .lease(options.lease)
        .retry(RetryPolicy {
            base: options.retry_base,
            cap: options.retry_base * 32,
        })
        .build()?;
    if options.until_idle {
        worker.run_until_idle()?;
        return Ok(());
    }
    let _running = worker.start()?;
    loop {
        std::thread::park();
    }
}

/// `{"orders": n, "emails": n, "email_attempts": n, "jobs": {"pending": n, "running": n, "dead": n}}`
fn stats(path: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    // Reads only: in WAL mode it never waits for the workers' writes.
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let count = |table: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })
    };
    let jobs = Queue::open(path)?.stats()?;
    Ok(format!(
        r#"{{"orders": {}, "emails": {}, "email_attempts": {}, "jobs": {{"pending": {}, "running": {}, "dead": {}}}}}"#,
        count("orders")?,
        count("emails")?,
        count("email_attempts")?,
        jobs.total(JobState::Pending),
        jobs.total(JobState::Running),
        jobs.total(JobState::Dead),
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, command) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("shop: {message} (see `shop --help`)");
            return ExitCode::from(2);
        }
    };
    match run(&path, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shop: {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}
