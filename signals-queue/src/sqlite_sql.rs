//! The jobs table on SQLite: its schema and statements, shared by the sync path (rusqlite,
//! feature `sqlite`) and the async path (sqlx, feature `sqlx-sqlite`); each is used by one of
//! them or both. Every state transition of [`JobState`](crate::JobState) is one statement,
//! guarded by the expected state and, from `running`, by the claim's lease token.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "sqlx-sqlite")),
    allow(dead_code)
)]

use std::time::Duration;

/// The schema version this crate writes and reads: 1 the jobs table, 2 the broker's inbox.
pub(crate) const SCHEMA_VERSION: i64 = 2;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signals_queue_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS signals_jobs (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT    NOT NULL,
    signal       TEXT    NOT NULL,
    handler      TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    priority     INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    lease_until  INTEGER,
    token        INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX IF NOT EXISTS signals_jobs_pending
    ON signals_jobs (priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS signals_jobs_running
    ON signals_jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS signals_jobs_done
    ON signals_jobs (finished_at) WHERE state = 'done';
CREATE TABLE IF NOT EXISTS signals_inbox (
    consumer     TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('done', 'dead')),
    error        TEXT,
    received_at  INTEGER  NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
";

/// `notify` writes one row per queued handler, in the caller's transaction.
pub(crate) const ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";

/// pending → running, for up to `?5` jobs whose handler this worker links (`?4`, a JSON array):
/// one statement, so two workers never claim one job. The attempt counts here, at the claim,
/// so that a job that kills its worker every time still runs out of attempts. (`LIMIT +?5`:
/// with a bare parameter there, SQLite re-prepares the statement at every run.)
pub(crate) const CLAIM: &str = "
UPDATE signals_jobs
SET state = 'running', attempt = attempt + 1, lease_until = ?1, token = ?2
WHERE id IN (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ?3
      AND handler IN (SELECT value FROM json_each(?4))
    ORDER BY priority DESC, run_at, id
    LIMIT +?5)
RETURNING id, event_id, handler, payload, attempt";

/// Whether any job of these handlers (`?2`) is runnable: a read, which in WAL mode never waits
/// for a writer (an idle worker asks before it claims, so that it does not queue behind the
/// commit of the job it was woken for).
pub(crate) const RUNNABLE: &str = "
SELECT EXISTS (
    SELECT 1 FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ?1
      AND handler IN (SELECT value FROM json_each(?2)))";

/// running → done, in the job's own transaction, only while this claim holds the lease.
pub(crate) const COMPLETE: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = ?1, lease_until = NULL
WHERE id = ?2 AND token = ?3 AND state = 'running'";

/// A group's fence (sqlx): the jobs of `?1` (a JSON array of ids) the claim `?2` still holds.
/// The group's transaction began `IMMEDIATE`, so no other connection writes until it ends.
pub(crate) const LOCK_CLAIMED: &str = "
SELECT id FROM signals_jobs
WHERE id IN (SELECT value FROM json_each(?1)) AND token = ?2 AND state = 'running'";

/// A group's completion (sqlx): every job of it that succeeded, in its transaction.
pub(crate) const COMPLETE_MANY: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = ?1, lease_until = NULL
WHERE id IN (SELECT value FROM json_each(?2)) AND token = ?3 AND state = 'running'";

/// running → pending (after `run_at`) or dead (no attempts left, or `?1`: cannot run).
pub(crate) const FAIL: &str = "
UPDATE signals_jobs
SET state = CASE WHEN ?1 OR attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN ?1 OR attempt >= max_attempts THEN ?2 ELSE NULL END,
    run_at = ?3, lease_until = NULL, token = NULL, last_error = ?4
WHERE id = ?5 AND token = ?6 AND state = 'running'";

/// running → pending without counting the attempt: a job claimed but not started at shutdown.
pub(crate) const RELEASE: &str = "
UPDATE signals_jobs
SET state = 'pending', attempt = attempt - 1, lease_until = NULL, token = NULL
WHERE id = ?1 AND token = ?2 AND state = 'running'";

/// Extends the leases of the jobs one claim (`?2`, its token) still holds.
pub(crate) const HEARTBEAT: &str = "
UPDATE signals_jobs SET lease_until = ?1
WHERE token = ?2 AND state = 'running'";

/// running → pending (or dead, out of attempts) for every expired lease: its worker stopped.
pub(crate) const RESCUE: &str = "
UPDATE signals_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END,
    lease_until = NULL, token = NULL,
    last_error = 'the lease expired: the worker running the job stopped or lost the database'
WHERE state = 'running' AND lease_until < ?1";

/// dead → pending, with the attempts reset.
pub(crate) const RETRY_DEAD: &str = "
UPDATE signals_jobs
SET state = 'pending', attempt = 0, run_at = ?1, finished_at = NULL
WHERE state = 'dead'";

/// Deletes done jobs that finished before `?1`.
pub(crate) const PURGE_DONE: &str =
    "DELETE FROM signals_jobs WHERE state = 'done' AND finished_at < ?1";

/// The version of the schema, `NULL` before the first migration.
pub(crate) const VERSION: &str = "SELECT MAX(version) FROM signals_queue_schema";

/// Records the schema version.
pub(crate) const SET_VERSION: &str = "INSERT INTO signals_queue_schema (version) VALUES (?1)";

/// Job counts by handler and state, with the oldest job's creation time of each group.
pub(crate) const STATS: &str = "
SELECT handler, state, COUNT(*), MIN(created_at) FROM signals_jobs
GROUP BY handler, state";

/// Every dead job, oldest first.
pub(crate) const DEAD_JOBS: &str = "
SELECT id, handler, attempt, last_error, payload FROM signals_jobs
WHERE state = 'dead' ORDER BY id";

/// How many jobs of these handlers (`?1`, a JSON array) are pending or running.
pub(crate) const BUSY: &str = "
SELECT COUNT(*) FROM signals_jobs WHERE state IN ('pending', 'running')
  AND handler IN (SELECT value FROM json_each(?1))";

/// How long a statement waits for another connection's write lock before `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A job as a claim returns it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job's row id.
    pub id: i64,
    /// The id of the `notify` that wrote it.
    pub event_id: String,
    /// The job name of its handler (or publishing function).
    pub handler: String,
    /// The signal (or message) as JSON.
    pub payload: String,
    /// This attempt, counted at the claim: 1 for the first.
    pub attempt: u32,
    /// The claim's lease token: completing, failing and renewing the job need it.
    pub token: i64,
}
