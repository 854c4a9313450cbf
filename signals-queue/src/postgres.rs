//! The jobs table on PostgreSQL: the schema of `sqlite.rs` in PostgreSQL's types (times are
//! milliseconds since the Unix epoch in both; the payload is `jsonb`, the event id a `uuid`),
//! and the same state transitions, one statement each. The claim locks its rows with
//! `FOR UPDATE SKIP LOCKED` in a materialized CTE, so concurrent claims skip each other's rows
//! instead of waiting for them, and the `UPDATE` touches exactly the rows the CTE locked.

/// Creates the schema; run under an advisory lock, so two processes migrating at once take
/// turns. The statement-level trigger sends one notification on the channel
/// `signals_jobs.<schema>` per inserting statement (so applications in other schemas of the
/// database are not woken);
/// PostgreSQL delivers it when the transaction commits (never for one that rolls back) and
/// folds identical notifications of one transaction into one: a hint for idle workers, never
/// the delivery path.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signals_queue_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS signals_jobs (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID    NOT NULL,
    signal       TEXT    NOT NULL,
    handler      TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    priority     INTEGER NOT NULL,
    payload      JSONB   NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       BIGINT  NOT NULL,
    lease_until  BIGINT,
    token        BIGINT,
    last_error   TEXT,
    created_at   BIGINT  NOT NULL,
    finished_at  BIGINT
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
    received_at  BIGINT  NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE OR REPLACE FUNCTION signals_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('signals_jobs.' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER signals_jobs_notify AFTER INSERT ON signals_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION signals_jobs_notify();
";

/// The channel the schema's trigger notifies, for the table in the current schema.
pub(crate) const CHANNEL: &str = "SELECT 'signals_jobs.' || current_schema()";

/// Serializes concurrent migrations (any constant key; this one spells "signals").
pub(crate) const LOCK: &str = "SELECT pg_advisory_xact_lock(7359109584012345)";

pub(crate) const VERSION: &str = "SELECT MAX(version)::BIGINT FROM signals_queue_schema";

pub(crate) const SET_VERSION: &str = "INSERT INTO signals_queue_schema (version) VALUES ($1)";

pub(crate) const ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb, $7, $8, $8)";

pub(crate) const CLAIM: &str = "
WITH next AS MATERIALIZED (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= $3
      AND handler IN (SELECT jsonb_array_elements_text($4::jsonb))
    ORDER BY priority DESC, run_at, id
    LIMIT $5
    FOR UPDATE SKIP LOCKED)
UPDATE signals_jobs AS job
SET state = 'running', attempt = job.attempt + 1, lease_until = $1, token = $2
FROM next WHERE job.id = next.id
RETURNING job.id, job.event_id::text, job.handler, job.payload::text, job.attempt";

pub(crate) const COMPLETE: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = $1, lease_until = NULL
WHERE id = $2 AND token = $3 AND state = 'running'";

/// A group's fence: locks the jobs of the group its claim still holds.
pub(crate) const LOCK_CLAIMED: &str = "
SELECT id FROM signals_jobs
WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint)
  AND token = $2 AND state = 'running'
FOR UPDATE";

/// A group's completion: every job of it that succeeded, in its transaction.
pub(crate) const COMPLETE_MANY: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = $1, lease_until = NULL
WHERE id IN (SELECT jsonb_array_elements_text($2::jsonb)::bigint)
  AND token = $3 AND state = 'running'";

pub(crate) const FAIL: &str = "
UPDATE signals_jobs
SET state = CASE WHEN $1 OR attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN $1 OR attempt >= max_attempts THEN $2::BIGINT ELSE NULL END,
    run_at = $3, lease_until = NULL, token = NULL, last_error = $4
WHERE id = $5 AND token = $6 AND state = 'running'";

pub(crate) const RELEASE: &str = "
UPDATE signals_jobs
SET state = 'pending', attempt = attempt - 1, lease_until = NULL, token = NULL
WHERE id = $1 AND token = $2 AND state = 'running'";

/// Skips rows locked by a group's open transaction: those jobs are being completed.
pub(crate) const HEARTBEAT: &str = "
UPDATE signals_jobs SET lease_until = $1
WHERE id IN (
    SELECT id FROM signals_jobs WHERE token = $2 AND state = 'running'
    FOR UPDATE SKIP LOCKED)";

/// Skips locked rows: a row some open transaction is completing is not abandoned.
pub(crate) const RESCUE: &str = "
UPDATE signals_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN $1::BIGINT ELSE NULL END,
    lease_until = NULL, token = NULL,
    last_error = 'the lease expired: the worker running the job stopped or lost the database'
WHERE id IN (
    SELECT id FROM signals_jobs WHERE state = 'running' AND lease_until < $1
    FOR UPDATE SKIP LOCKED)";

pub(crate) const RETRY_DEAD: &str = "
UPDATE signals_jobs
SET state = 'pending', attempt = 0, run_at = $1, finished_at = NULL
WHERE state = 'dead'";

pub(crate) const PURGE_DONE: &str =
    "DELETE FROM signals_jobs WHERE state = 'done' AND finished_at < $1";

pub(crate) const STATS: &str = "
SELECT handler, state, COUNT(*)::BIGINT, MIN(created_at)::BIGINT FROM signals_jobs
GROUP BY handler, state";

pub(crate) const DEAD_JOBS: &str = "
SELECT id, handler, attempt, last_error, payload::text FROM signals_jobs
WHERE state = 'dead' ORDER BY id";

pub(crate) const BUSY: &str = "
SELECT COUNT(*)::BIGINT FROM signals_jobs WHERE state IN ('pending', 'running')
  AND handler IN (SELECT jsonb_array_elements_text($1::jsonb))";
