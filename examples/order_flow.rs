//! The order flow, up the ladder: an order is inserted inside a SQLite transaction, and
//! `notify(OrderCreated)` runs billing and the audit log in that same transaction (signals),
//! and writes a job for the welcome email in it (a queued handler). The transaction commits;
//! an in-process worker then sends the email, retrying when the mail provider fails. When
//! billing declines the card, everything rolls back together, the email's job included.
//!
//! ```text
//! cargo run --example order_flow                    # one order commits, one is declined
//! cargo run --example order_flow -- --decline-card  # only the declined order
//! cargo run --example order_flow -- --wiring        # who reacts to what, as a table
//! cargo run --example order_flow -- --wiring=mermaid  # ... as a Mermaid flowchart
//! cargo run --example order_flow -- --help          # the options
//! ```

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use shop_handlers::BillingError;
use shop_signals::{migrate, place_order, Mailer, PlaceOrderError, DECLINED_CARD, GOOD_CARD};
use signals_queue::{RetryPolicy, Worker};

// The handlers are private to `shop_handlers`; nothing here calls them by name. This line links
// the crate, and with it every handler it registers.
use shop_handlers as _;

/// What `--help` prints; an unknown argument prints it to stderr.
pub const USAGE: &str = "\
usage: order_flow [--decline-card | --wiring | --wiring=mermaid | --help]
       (from the workspace: cargo run --example order_flow -- [options])

Places an order that commits and one whose card is declined, which rolls back; a worker in
the same process sends the committed order's welcome email, retrying a failed attempt.

options:
  --decline-card     place only the order whose card is declined
  --wiring           print who reacts to what (signals_core::catalog()) as a table, and exit
  --wiring=mermaid   print the same as a Mermaid flowchart, and exit
  -h, --help         print this help, and exit
";

/// What the command line asks the demo to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Place the orders: both, or only the declined one.
    Orders {
        /// `--decline-card`: skip the order that commits.
        decline_only: bool,
    },
    /// `--wiring` or `--wiring=mermaid`: print the catalog and exit.
    Wiring {
        /// As a Mermaid flowchart rather than a table.
        mermaid: bool,
    },
    /// `-h` or `--help`: print [`USAGE`] and exit.
    Help,
}

/// Reads the arguments after the program name. `--help` wins over everything, `--wiring` over
/// `--decline-card`; anything else is an error naming the argument.
pub fn parse_args<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> Result<Mode, String> {
    let (mut decline_only, mut wiring) = (false, None);
    for arg in args {
        match arg.as_ref() {
            "-h" | "--help" => return Ok(Mode::Help),
            "--decline-card" => decline_only = true,
            "--wiring" => wiring = Some(false),
            "--wiring=mermaid" => wiring = Some(true),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(match wiring {
        Some(mermaid) => Mode::Wiring { mermaid },
        None => Mode::Orders { decline_only },
    })
}

fn print_tables(conn: &Connection) -> rusqlite::Result<()> {
    let mut counts = Vec::new();
    for table in ["orders", "billing", "audit_log", "emails", "signals_jobs"] {
        let count: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })?;
        counts.push(format!("{table}: {count}"));
    }
    println!("  rows now: {}", counts.join(", "));
    Ok(())
}

fn run_order(
    conn: &mut Connection,
    mailer: &Mailer,
    email: &str,
    cents: i64,
    card: &str,
) -> rusqlite::Result<()> {
    println!("\nPlacing an order for {email}, {cents} cents, card {card}");
    match place_order(conn, mailer, email, cents, card) {
        Ok(order_id) => {
            println!("  committed: order #{order_id} with its billing and audit rows, and a job for its email")
        }
        Err(PlaceOrderError::Handler(error)) => {
            println!("  rolled back: {error}");
            println!(
                "  because: {}",
                error.source().map_or(String::new(), ToString::to_string)
            );
            if let Some(BillingError::CardDeclined { last4 }) = error.downcast_ref::<BillingError>()
            {
                println!("  the caller downcasts the handler's error: CardDeclined {{ last4: {last4:?} }}");
            }
            println!("  the audit row written before billing failed is gone with the order; no email job");
        }
        Err(PlaceOrderError::Database(error)) => return Err(error),
    }
    print_tables(conn)
}

/// Prints who reacts to what: as a table, or as a Mermaid flowchart.
fn print_wiring(mermaid: bool) {
    if mermaid {
        print!("{}", signals_core::catalog().to_mermaid());
    } else {
        print!("{}", signals_core::catalog());
    }
}

/// Places the orders with a worker running beside them, waits for the worker to finish the
/// email jobs, and reports what the mail provider saw.
fn run(path: &Path, decline_only: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = migrate(path)?;
    let mailer = Arc::new(Mailer::flaky("shop@example.com"));
    let worker = Worker::builder(path)
        .state(Arc::clone(&mailer))
        .retry(RetryPolicy {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
        })
        .build()?
        .start()?;
    if !decline_only {
        run_order(&mut conn, &mailer, "ada@example.com", 4200, GOOD_CARD)?;
    }
    run_order(&mut conn, &mailer, "bob@example.com", 1999, DECLINED_CARD)?;

    println!("\nThe worker sends committed orders' email after commit:");
    worker.wait_idle()?;
    worker.shutdown(Duration::from_secs(5))?;
    println!(
        "  delivered {:?} in {} call(s) to the provider",
        mailer.delivered(),
        mailer.attempts()
    );
    print_tables(&conn)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let decline_only = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Orders { decline_only }) => decline_only,
        Ok(Mode::Wiring { mermaid }) => {
            print_wiring(mermaid);
            return Ok(());
        }
        Ok(Mode::Help) => {
            print!("{USAGE}");
            return Ok(());
        }
        Err(message) => {
            eprint!("order_flow: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };

    println!("Who reacts to what (signals_core::catalog()):\n");
    print!("{}", signals_core::catalog());

    // A database file: the worker opens connections of its own.
    let dir = tempfile::tempdir()?;
    run(&dir.path().join("shop.db"), decline_only)
}
