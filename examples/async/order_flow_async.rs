//! The order flow on tokio and sqlx: an order is inserted in a SQLite transaction,
//! `notify_async(OrderCreated)` runs the audit log, billing and the welcome email, each an
//! `async fn` writing through the same `sqlx::Transaction`, and the transaction commits. When
//! billing declines the card, everything rolls back together.
//!
//! ```text
//! cargo run --example order_flow_async
//! cargo run --example order_flow_async -- --help
//! ```
//!
//! Signals, handlers and the binary share this file; `order_flow` shows them in three crates.

use std::error::Error as _;

use signals_core::{notify_async, on, Signal};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Sqlite, SqlitePool, Transaction};

/// A card that billing accepts.
pub const GOOD_CARD: &str = "4242 4242 4242 4242";
/// The test card that every issuer declines.
pub const DECLINED_CARD: &str = "4000 0000 0000 0002";

/// What `--help` prints; an unknown argument prints it to stderr.
pub const USAGE: &str = "\
usage: order_flow_async [--help]
       (from the workspace: cargo run --example order_flow_async -- [options])

Places an order that commits and one whose card is declined, which rolls back, each in a
tokio task, through sqlx on an in-memory SQLite database.

options:
  -h, --help   print this help, and exit
";

/// What the command line asks the demo to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Place the two orders.
    Orders,
    /// `-h` or `--help`: print [`USAGE`] and exit.
    Help,
}

/// Reads the arguments after the program name; anything but `-h` or `--help` is an error
/// naming the argument.
pub fn parse_args<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> Result<Mode, String> {
    let mut mode = Mode::Orders;
    for arg in args {
        match arg.as_ref() {
            "-h" | "--help" => mode = Mode::Help,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(mode)
}

/// The shop's tables.
pub const SCHEMA: &str = "
    CREATE TABLE orders    (id INTEGER PRIMARY KEY, customer_email TEXT NOT NULL, total_cents INTEGER NOT NULL);
    CREATE TABLE billing   (order_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL);
    CREATE TABLE audit_log (order_id INTEGER NOT NULL, entry TEXT NOT NULL);
    CREATE TABLE outbox    (id INTEGER PRIMARY KEY, recipient TEXT NOT NULL, subject TEXT NOT NULL);
";

// --- Signals and context ---

/// What every handler receives: the caller's open transaction and a mailer.
pub struct AppCtx<'a> {
    /// The transaction the order is being placed in.
    pub tx: &'a mut Transaction<'static, Sqlite>,
    /// Queues email in the transaction's outbox.
    pub mailer: &'a Mailer,
}

/// Queues email in the `outbox` table, inside the caller's transaction.
pub struct Mailer;

impl Mailer {
    /// Queues one email in `tx`'s outbox.
    pub async fn queue(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        to: &str,
        subject: &str,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO outbox (recipient, subject) VALUES (?, ?)")
            .bind(to)
            .bind(subject)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// An order was inserted; its handlers run inside the same transaction.
#[derive(Signal, Debug)]
#[signal(context = AppCtx<'_>, asynchronous)]
pub struct OrderCreated {
    /// The new order's id.
    pub order_id: i64,
    /// Who placed it.
    pub customer_email: String,
    /// What the card is charged, in cents.
    pub total_cents: i64,
    /// The card to charge.
    pub card_number: String,
}

// --- Handlers ---

/// Why billing refused an order.
#[derive(Debug)]
pub enum BillingError {
    /// The card issuer declined the charge.
    CardDeclined {
        /// The card's last four digits.
        last4: String,
    },
    /// The billing record could not be written.
    Database(sqlx::Error),
}

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BillingError::CardDeclined { last4 } => {
                write!(f, "card ending in {last4} was declined")
            }
            BillingError::Database(_) => f.write_str("could not write the billing record"),
        }
    }
}

impl std::error::Error for BillingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BillingError::CardDeclined { .. } => None,
            BillingError::Database(error) => Some(error),
        }
    }
}

impl From<sqlx::Error> for BillingError {
    fn from(error: sqlx::Error) -> Self {
        BillingError::Database(error)
    }
}

#[on(OrderCreated, priority = 10)]
async fn write_audit_log(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO audit_log (order_id, entry) VALUES (?, ?)")
        .bind(sig.order_id)
        .bind(format!("order created by {}", sig.customer_email))
        .execute(&mut **ctx.tx)
        .await?;
    Ok(())
}

#[on(OrderCreated)]
async fn create_billing_record(
    sig: &OrderCreated,
    ctx: &mut AppCtx<'_>,
) -> Result<(), BillingError> {
    if sig.card_number == DECLINED_CARD {
        let last4 = sig.card_number[sig.card_number.len() - 4..].to_owned();
        return Err(BillingError::CardDeclined { last4 });
    }
    sqlx::query("INSERT INTO billing (order_id, amount_cents) VALUES (?, ?)")
        .bind(sig.order_id)
        .bind(sig.total_cents)
        .execute(&mut **ctx.tx)
        .await?;
    Ok(())
}

#[on(OrderCreated, priority = -10)]
async fn send_welcome_email(sig: &OrderCreated, ctx: &mut AppCtx<'_>) -> sqlx::Result<()> {
    let subject = format!("Thanks for your order #{}", sig.order_id);
    ctx.mailer
        .queue(ctx.tx, &sig.customer_email, &subject)
        .await
}

// --- The caller ---

/// Why an order could not be placed.
#[derive(Debug)]
pub enum PlaceOrderError {
    /// The order itself could not be written or committed.
    Database(sqlx::Error),
    /// A handler of `OrderCreated` failed; nothing was committed.
    Handler(signals_core::Error),
}

impl From<sqlx::Error> for PlaceOrderError {
    fn from(error: sqlx::Error) -> Self {
        PlaceOrderError::Database(error)
    }
}

impl From<signals_core::Error> for PlaceOrderError {
    fn from(error: signals_core::Error) -> Self {
        PlaceOrderError::Handler(error)
    }
}

/// Inserts the order and notifies `OrderCreated`, all in one transaction. If any handler
/// fails, `?` returns before `commit`, and dropping `tx` rolls everything back.
pub async fn place_order(
    pool: &SqlitePool,
    mailer: &Mailer,
    customer_email: &str,
    total_cents: i64,
    card_number: &str,
) -> Result<i64, PlaceOrderError> {
    let mut tx = pool.begin().await?;
    let order_id = sqlx::query("INSERT INTO orders (customer_email, total_cents) VALUES (?, ?)")
        .bind(customer_email)
        .bind(total_cents)
        .execute(&mut *tx)
        .await?
        .last_insert_rowid();

    let signal = OrderCreated {
        order_id,
        customer_email: customer_email.to_owned(),
        total_cents,
        card_number: card_number.to_owned(),
    };
    notify_async(
        &signal,
        &mut AppCtx {
            tx: &mut tx,
            mailer,
        },
    )
    .await?;

    tx.commit().await?;
    Ok(order_id)
}

/// An in-memory database with the schema. One connection: each in-memory SQLite connection
/// would otherwise be a database of its own.
pub async fn database() -> sqlx::Result<SqlitePool> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    Ok(pool)
}

/// How many rows each table holds.
pub async fn row_counts(pool: &SqlitePool) -> sqlx::Result<Vec<(&'static str, i64)>> {
    const COUNTS: [(&str, &str); 4] = [
        ("orders", "SELECT COUNT(*) FROM orders"),
        ("billing", "SELECT COUNT(*) FROM billing"),
        ("audit_log", "SELECT COUNT(*) FROM audit_log"),
        ("outbox", "SELECT COUNT(*) FROM outbox"),
    ];
    let mut counts = Vec::new();
    for (table, sql) in COUNTS {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        counts.push((table, count));
    }
    Ok(counts)
}

async fn run_order(pool: SqlitePool, email: &'static str, cents: i64, card: &'static str) {
    println!("\nPlacing an order for {email}, {cents} cents, card {card}");
    // In its own task, as in a web server: `notify_async`'s future is `Send`.
    let placed = tokio::spawn({
        let pool = pool.clone();
        async move { place_order(&pool, &Mailer, email, cents, card).await }
    });
    match placed.await.expect("the order task does not panic") {
        Ok(order_id) => {
            println!("  committed: order #{order_id} with its billing, audit and outbox rows")
        }
        Err(PlaceOrderError::Handler(error)) => {
            println!("  rolled back: {error}");
            println!(
                "  because: {}",
                error.source().map_or(String::new(), ToString::to_string)
            );
        }
        Err(PlaceOrderError::Database(error)) => println!("  database error: {error}"),
    }
    match row_counts(&pool).await {
        Ok(counts) => {
            let counts: Vec<_> = counts.iter().map(|(t, n)| format!("{t}: {n}")).collect();
            println!("  rows now: {}", counts.join(", "));
        }
        Err(error) => println!("  could not count rows: {error}"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Orders) => {}
        Ok(Mode::Help) => {
            print!("{USAGE}");
            return Ok(());
        }
        Err(message) => {
            eprint!("order_flow_async: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
    println!("Who reacts to what (signals_core::catalog()):\n");
    print!("{}", signals_core::catalog());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = database().await?;
        run_order(pool.clone(), "ada@example.com", 4200, GOOD_CARD).await;
        run_order(pool, "bob@example.com", 1999, DECLINED_CARD).await;
        Ok(())
    })
}
