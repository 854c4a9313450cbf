//! `signals-queue`: the operator's command line of the queue rung, over the jobs table of a
//! SQLite file or a PostgreSQL database. It links none of the application's handlers: what it
//! shows of them, workers record when they start.
//!
//! ```text
//! signals-queue --db sqlite://shop.db stats --json
//! signals-queue --db postgres://app@db/shop jobs --state dead --queue email --limit 20
//! signals-queue --db postgres://app@db/shop retry --all --state dead --handler shop::send_welcome_email --dry-run
//! signals-queue --db postgres://app@db/shop pause email
//! ```

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use signals_queue::{
    Action, AsyncQueue, Attempt, JobDetail, JobFilter, JobStatus, JobSummary, Overview, Pool,
};

/// Operate the jobs table of signals-queue: counts, jobs, retries, discards, cancellations,
/// paused queues, pruning, the migration.
#[derive(Parser, Debug)]
#[command(name = "signals-queue", version)]
struct Cli {
    /// The database: sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE.
    #[arg(long, value_name = "URL", env = "SIGNALS_QUEUE_DB")]
    db: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the queue's tables, or bring them up to this release's schema.
    Migrate,
    /// Jobs by queue and by handler, in each state; whether a queue is paused; how long its
    /// oldest due job has waited.
    Stats {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List jobs, by id, a page at a time.
    Jobs {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only jobs with an id above this one: the last id of the previous page.
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after: i64,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one job: its payload and every attempt.
    Job {
        /// The job's id.
        id: i64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run dead, discarded, cancelled or scheduled jobs now (a dead one with its attempts
    /// reset).
    Retry(Targets),
    /// Never run these waiting or dead jobs.
    Discard(Targets),
    /// Cancel waiting or running jobs: a running one's worker drops it within a second and its
    /// completion is refused.
    Cancel(Targets),
    /// Stop every worker from claiming the queue's jobs (running ones finish).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Let workers claim a paused queue's jobs again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Delete finished jobs: done ones, and dead, discarded and cancelled ones, each older
    /// than its age (10,000 rows a statement; the done counts stay exact).
    Prune {
        /// Done jobs that finished longer ago than this (e.g. 24h, 7d).
        #[arg(long, value_name = "AGE", default_value = "24h", value_parser = humantime::parse_duration)]
        done_older_than: Duration,
        /// Dead, discarded and cancelled jobs that finished longer ago than this.
        #[arg(long, value_name = "AGE", default_value = "14d", value_parser = humantime::parse_duration)]
        dead_older_than: Duration,
    },
}

/// Which jobs: by state, handler and queue.
#[derive(Args, Debug, Clone)]
struct Filter {
    /// pending, scheduled, running, done, dead, discarded or cancelled.
    #[arg(long, value_name = "STATE")]
    state: Option<JobStatus>,
    /// A handler's job name (as `stats` lists it).
    #[arg(long, value_name = "NAME")]
    handler: Option<String>,
    /// A queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
}

impl Filter {
    fn to_filter(&self) -> JobFilter {
        let mut filter = JobFilter::new();
        if let Some(state) = self.state {
            filter = filter.state(state);
        }
        if let Some(handler) = &self.handler {
            filter = filter.handler(handler.clone());
        }
        if let Some(queue) = &self.queue {
            filter = filter.queue(queue.clone());
        }
        filter
    }
}

/// The jobs an action concerns: ids, or everything a filter matches.
#[derive(Args, Debug)]
struct Targets {
    /// The jobs' ids.
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    ids: Vec<i64>,
    /// Every job the filter matches (`--state` is required), in chunks of 1,000.
    #[arg(long, requires = "state")]
    all: bool,
    #[command(flatten)]
    filter: Filter,
    /// Change nothing: print how many jobs would change.
    #[arg(long)]
    dry_run: bool,
}

/// A job as `jobs --json` prints it.
#[derive(Serialize)]
struct JobLine<'a> {
    id: i64,
    handler: &'a str,
    queue: &'a str,
    state: JobStatus,
    attempt: u32,
    max_attempts: u32,
    due_at: String,
    last_error: Option<&'a str>,
}

impl<'a> From<&'a JobSummary> for JobLine<'a> {
    fn from(job: &'a JobSummary) -> Self {
        JobLine {
            id: job.id,
            handler: &job.handler,
            queue: &job.queue,
            state: job.state,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            due_at: rfc3339(job.due_at),
            last_error: job.last_error.as_deref(),
        }
    }
}

/// An attempt as `job --json` prints it.
#[derive(Serialize)]
struct AttemptLine<'a> {
    started_at: Option<String>,
    duration_ms: Option<i64>,
    worker: Option<&'a str>,
    error: Option<&'a str>,
}

impl<'a> From<&'a Attempt> for AttemptLine<'a> {
    fn from(attempt: &'a Attempt) -> Self {
        AttemptLine {
            started_at: attempt.started_at.map(rfc3339),
            duration_ms: attempt.duration_ms,
            worker: attempt.worker.as_deref(),
            error: attempt.error.as_deref(),
        }
    }
}

/// A job as `job --json` prints it.
#[derive(Serialize)]
struct JobObject<'a> {
    #[serde(flatten)]
    job: JobLine<'a>,
    payload: serde_json::Value,
    attempts: Vec<AttemptLine<'a>>,
}

/// Milliseconds since the Unix epoch as RFC 3339, in UTC.
fn rfc3339(millis: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Runs one command; what it prints goes to stdout.
async fn run(cli: Cli) -> Result<(), String> {
    let pool = Pool::connect(&cli.db, 2)
        .await
        .map_err(|error| error.to_string())?;
    let queue = AsyncQueue::new(pool);
    let result = command(&queue, cli.command).await;
    queue.pool().close().await;
    result
}

async fn command(queue: &AsyncQueue, command: Command) -> Result<(), String> {
    let error = |error: signals_queue::Error| error.to_string();
    match command {
        Command::Migrate => {
            queue.migrate().await.map_err(error)?;
            println!("migrated");
        }
        Command::Stats { json } => {
            let overview = queue.overview().await.map_err(error)?;
            match json {
                true => println!("{}", to_json(&overview)?),
                false => print_overview(&overview),
            }
        }
        Command::Jobs {
            filter,
            limit,
            after,
            json,
        } => {
            let jobs = queue
                .jobs(&filter.to_filter(), after, limit)
                .await
                .map_err(error)?;
            match json {
                true => {
                    let lines: Vec<JobLine<'_>> = jobs.iter().map(JobLine::from).collect();
                    println!("{}", to_json(&lines)?);
                }
                false => print_jobs(&jobs),
            }
        }
        Command::Job { id, json } => {
            let job = queue
                .job(id)
                .await
                .map_err(error)?
                .ok_or_else(|| format!("no job {id}"))?;
            match json {
                true => println!("{}", to_json(&job_object(&job))?),
                false => print_job(&job),
            }
        }
        Command::Retry(targets) => act(queue, Action::Retry, targets).await?,
        Command::Discard(targets) => act(queue, Action::Discard, targets).await?,
        Command::Cancel(targets) => act(queue, Action::Cancel, targets).await?,
        Command::Pause { queue: name } => {
            queue.pause(&name).await.map_err(error)?;
            println!("paused {name}");
        }
        Command::Resume { queue: name } => {
            queue.resume(&name).await.map_err(error)?;
            println!("resumed {name}");
        }
        Command::Prune {
            done_older_than,
            dead_older_than,
        } => {
            let done = queue.purge_done(done_older_than).await.map_err(error)?;
            let dead = queue.purge_finished(dead_older_than).await.map_err(error)?;
            println!("pruned {done} done and {dead} dead, discarded or cancelled jobs");
        }
    }
    Ok(())
}

/// `retry`, `discard` or `cancel`: prints how many jobs changed (or would).
async fn act(queue: &AsyncQueue, action: Action, targets: Targets) -> Result<(), String> {
    let changed = match targets.all {
        true => {
            queue
                .act_on_all(action, &targets.filter.to_filter(), targets.dry_run)
                .await
        }
        false => queue.act_on(action, &targets.ids, targets.dry_run).await,
    }
    .map_err(|error| error.to_string())?;
    let jobs = if changed == 1 { "job" } else { "jobs" };
    match targets.dry_run {
        true => println!("{changed} {jobs} would change"),
        false => println!("{changed} {jobs} changed"),
    }
    Ok(())
}

fn job_object(job: &JobDetail) -> JobObject<'_> {
    JobObject {
        job: JobLine::from(&job.summary),
        payload: serde_json::from_str(&job.payload)
            .unwrap_or_else(|_| serde_json::Value::String(job.payload.clone())),
        attempts: job.attempts.iter().map(AttemptLine::from).collect(),
    }
}

fn to_json(value: &impl Serialize) -> Result<String, String> {
    serde_json::to_string(value).map_err(|error| error.to_string())
}

fn print_overview(overview: &Overview) {
    let header = "pending  scheduled  running     done     dead  discarded  cancelled";
    println!("{:<32} {header}  oldest due", "queue");
    for (name, queue) in &overview.queues {
        let c = &queue.counts;
        let paused = if queue.paused { " (paused)" } else { "" };
        let oldest = queue
            .oldest_due_ms
            .map(|ms| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<32} {:>7} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}  {oldest}{paused}",
            name, c.pending, c.scheduled, c.running, c.done, c.dead, c.discarded, c.cancelled
        );
    }
    println!();
    println!("{:<32} {header}", "handler");
    for (name, c) in &overview.handlers {
        println!(
            "{:<32} {:>7} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}",
            name, c.pending, c.scheduled, c.running, c.done, c.dead, c.discarded, c.cancelled
        );
    }
}

fn print_jobs(jobs: &[JobSummary]) {
    for job in jobs {
        println!(
            "{:>10}  {:<9}  {}/{}  {:<24}  {:<12}  due {}{}",
            job.id,
            job.state,
            job.attempt,
            job.max_attempts,
            job.handler,
            job.queue,
            rfc3339(job.due_at),
            job.last_error
                .as_deref()
                .map(|error| format!("  {}", error.replace('\n', " ")))
                .unwrap_or_default(),
        );
    }
}

fn print_job(job: &JobDetail) {
    let summary = &job.summary;
    println!("job {} ({})", summary.id, summary.state);
    println!("  handler   {}", summary.handler);
    println!("  queue     {}", summary.queue);
    println!(
        "  attempt   {} of {}",
        summary.attempt, summary.max_attempts
    );
    println!("  due at    {}", rfc3339(summary.due_at));
    println!("  payload   {}", job.payload);
    for (n, attempt) in job.attempts.iter().enumerate() {
        let line = AttemptLine::from(attempt);
        println!(
            "  attempt {}: started {}, {} ms, on {}: {}",
            n + 1,
            line.started_at.as_deref().unwrap_or("?"),
            line.duration_ms.map_or("?".into(), |ms| ms.to_string()),
            line.worker.unwrap_or("?"),
            line.error.unwrap_or("succeeded"),
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("signals-queue: {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn due_times_print_as_rfc_3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn an_action_on_all_jobs_needs_a_state() {
        let parsed = Cli::try_parse_from(["signals-queue", "--db", "x", "retry", "--all"]);
        assert!(parsed.is_err());
        let parsed = Cli::try_parse_from([
            "signals-queue",
            "--db",
            "x",
            "retry",
            "--all",
            "--state",
            "dead",
        ]);
        assert!(parsed.is_ok());
        let parsed = Cli::try_parse_from(["signals-queue", "--db", "x", "retry"]);
        assert!(parsed.is_err(), "ids or --all");
    }
}
