//! The jobs table on PostgreSQL: the schema of `sqlite_sql.rs` in PostgreSQL's types (times are
//! milliseconds since the Unix epoch in both; the payload is `jsonb`, the event id a `uuid`),
//! and the same state transitions ([`lifecycle`](crate::lifecycle)), one statement each.
//!
//! Time is the database's: every statement that reads or writes a time takes it as
//! `COALESCE($n, <the server's clock>)`, and the worker binds `NULL` unless a test gave it a
//! manual [`Clock`](crate::Clock). No statement compares two machines' clocks.
//!
//! The claim locks its rows with `FOR UPDATE SKIP LOCKED` in a materialized CTE, so concurrent
//! claims skip each other's rows instead of waiting for them, and the `UPDATE` touches exactly
//! the rows the CTE locked.

/// These statements are PostgreSQL's (the store binds times by it).
pub(crate) const IS_POSTGRES: bool = true;

/// `COALESCE($n, now in milliseconds)`, read from the server's clock.
macro_rules! now {
    ($param:literal) => {
        concat!(
            "COALESCE(",
            $param,
            "::BIGINT, (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT)"
        )
    };
}

/// Creates the schema, or brings an older one up to date in place (`ADD COLUMN` of a nullable
/// column or one with a constant default rewrites no row); run under an advisory lock, so two
/// processes migrating at once take turns. The statement-level trigger sends one notification
/// on the channel `signals_jobs_<md5 of the schema's name>` per inserting statement (so
/// applications in other schemas of the database are not woken; the hash keeps the channel
/// under PostgreSQL's 63 bytes whatever the schema's name); PostgreSQL delivers it when the
/// transaction commits (never for one that rolls back) and folds identical notifications of one
/// transaction into one: a hint for idle workers, never the delivery path. A notification takes
/// a lock every committing notifier shares: a write-heavy application may turn it off for its
/// role or database (`ALTER ROLE app SET signals.notify = 'off'`) and let workers poll.
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
ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS worker BIGINT;
ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS crashes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS signals_workers (
    id           BIGINT  PRIMARY KEY,
    lease_until  BIGINT  NOT NULL,
    lease_ms     BIGINT  NOT NULL,
    beats        BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS signals_jobs_pending
    ON signals_jobs (priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS signals_jobs_suspect
    ON signals_jobs (run_at) WHERE state = 'pending' AND crashes > 0;
DROP INDEX IF EXISTS signals_jobs_running;
CREATE INDEX IF NOT EXISTS signals_jobs_worker
    ON signals_jobs (worker) WHERE state = 'running';
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
    IF coalesce(current_setting('signals.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('signals_jobs_' || md5(TG_TABLE_SCHEMA), '');
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER signals_jobs_notify AFTER INSERT ON signals_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION signals_jobs_notify();
";

/// Whether the schema table exists: before the first migration it does not.
pub(crate) const HAS_SCHEMA: &str = "SELECT to_regclass('signals_queue_schema') IS NOT NULL";

/// The channel the schema's trigger notifies, for the table in the current schema.
pub(crate) const CHANNEL: &str = "SELECT 'signals_jobs_' || md5(current_schema())";

/// Serializes concurrent migrations (any constant key; this one spells "signals").
pub(crate) const LOCK: &str = "SELECT pg_advisory_xact_lock(7359109584012345)";

pub(crate) const VERSION: &str = "SELECT MAX(version)::BIGINT FROM signals_queue_schema";

pub(crate) const SET_VERSION: &str = "INSERT INTO signals_queue_schema (version) VALUES ($1)";

pub(crate) const ENQUEUE: &str = concat!(
    "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
SELECT $1::uuid, $2, $3, $4, $5, $6::jsonb, $7, t.now, t.now
FROM (SELECT ",
    now!("$8"),
    " AS now) AS t"
);

/// The jobs of one `notify` (several queued handlers) in one statement: arrays of handler,
/// queue, priority, payload and max attempts, in run order.
pub(crate) const ENQUEUE_MANY: &str = concat!(
    "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
SELECT $1::uuid, $2, job.handler, job.queue, job.priority, job.payload::jsonb, job.max_attempts,
       t.now, t.now
FROM unnest($3::text[], $4::text[], $5::int4[], $6::text[], $7::int4[])
         WITH ORDINALITY AS job (handler, queue, priority, payload, max_attempts, n),
     (SELECT ",
    now!("$8"),
    " AS now) AS t
ORDER BY job.n"
);

/// pending → running for up to `$4` due jobs of the handlers `$2` (a JSON array), suspects
/// (`$3`) or not, in claim order; charges the attempt (the handler starts now).
pub(crate) const CLAIM: &str = concat!(
    "
WITH next AS MATERIALIZED (
    SELECT id FROM signals_jobs
    WHERE state = 'pending' AND run_at <= ",
    now!("$1"),
    "
      AND handler IN (SELECT jsonb_array_elements_text($2::jsonb))
      AND (crashes > 0) = $3
    ORDER BY priority DESC, run_at, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED)
UPDATE signals_jobs AS job
SET state = 'running', attempt = job.attempt + 1, token = $5, worker = $6, lease_until = NULL
FROM next WHERE job.id = next.id
RETURNING job.id, job.event_id::text, job.handler, job.payload::text, job.attempt,
          job.priority, job.run_at"
);

/// running → done in the job's own transaction, only while its claim holds it. The row lock
/// it takes is the fence: a rescue skips a locked row.
pub(crate) const COMPLETE: &str = concat!(
    "
UPDATE signals_jobs SET state = 'done', finished_at = ",
    now!("$1"),
    ", worker = NULL
WHERE id = $2 AND token = $3 AND state = 'running'"
);

/// running → done for the `[id, token]` pairs of `$2`: the completer's flush.
pub(crate) const COMPLETE_MANY: &str = concat!(
    "
UPDATE signals_jobs AS job SET state = 'done', finished_at = ",
    now!("$1"),
    ", worker = NULL
FROM (SELECT (pair->>0)::BIGINT AS id, (pair->>1)::BIGINT AS token
      FROM jsonb_array_elements($2::jsonb) AS pair) AS done
WHERE job.id = done.id AND job.token = done.token AND job.state = 'running'"
);

/// running → pending after `$3` ms, or dead (no attempts left, `$1`: cannot run, or written
/// more than `$7` ms ago).
pub(crate) const FAIL: &str = concat!(
    "
UPDATE signals_jobs
SET state = CASE WHEN $1 OR attempt >= max_attempts OR created_at < t.now - $7::BIGINT
                 THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN $1 OR attempt >= max_attempts OR created_at < t.now - $7::BIGINT
                       THEN t.now ELSE NULL END,
    run_at = t.now + $3::BIGINT, token = NULL, worker = NULL, last_error = $4
FROM (SELECT ",
    now!("$2"),
    " AS now) AS t
WHERE id = $5 AND token = $6 AND state = 'running'"
);

/// Renews the lease of worker `$1` for `$3` ms: one row, whatever it runs.
pub(crate) const HEARTBEAT: &str = concat!(
    "
INSERT INTO signals_workers (id, lease_until, lease_ms, beats)
VALUES ($1, ",
    now!("$2"),
    " + $3::BIGINT, $3::BIGINT, 1)
ON CONFLICT (id) DO UPDATE
SET lease_until = EXCLUDED.lease_until, lease_ms = EXCLUDED.lease_ms,
    beats = signals_workers.beats + 1"
);

/// Forgets a worker that stopped.
pub(crate) const RETIRE: &str = "DELETE FROM signals_workers WHERE id = $1";

/// running → pending after a backoff (base `$2`, cap `$3` ms), a suspect from now on, or dead
/// when out of attempts, for every job whose worker's lease expired (by the server's clock),
/// and for running rows an older version left without a worker once their own lease expired.
/// Skips locked rows: a row some open transaction is completing is not abandoned.
pub(crate) const RESCUE: &str = concat!(
    "
UPDATE signals_jobs AS job
SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN t.now ELSE NULL END,
    run_at = t.now + (LEAST($3::FLOAT8,
        $2::FLOAT8 * (1::BIGINT << LEAST(GREATEST(attempt - 1, 0), 30))) * random())::BIGINT,
    token = NULL, worker = NULL, crashes = crashes + 1, last_error = $4
FROM (SELECT ",
    now!("$1"),
    " AS now) AS t
WHERE job.id IN (
    SELECT id FROM signals_jobs AS running
    WHERE state = 'running' AND CASE
        WHEN worker IS NULL THEN lease_until < ",
    now!("$1"),
    "
        ELSE NOT EXISTS (SELECT 1 FROM signals_workers AS w
                         WHERE w.id = running.worker AND w.lease_until >= ",
    now!("$1"),
    ")
    END
    FOR UPDATE SKIP LOCKED)"
);

/// Forgets the workers whose lease expired (their jobs were rescued first).
pub(crate) const PRUNE_WORKERS: &str = concat!(
    "DELETE FROM signals_workers WHERE lease_until < ",
    now!("$1")
);

/// Whether a suspect of these handlers (`$2`) is due: it runs alone.
pub(crate) const SUSPECT_DUE: &str = concat!(
    "
SELECT EXISTS (SELECT 1 FROM signals_jobs
    WHERE state = 'pending' AND crashes > 0 AND run_at <= ",
    now!("$1"),
    "
      AND handler IN (SELECT jsonb_array_elements_text($2::jsonb)))"
);

pub(crate) const RETRY_DEAD: &str = concat!(
    "
UPDATE signals_jobs
SET state = 'pending', attempt = 0, crashes = 0, finished_at = NULL, run_at = ",
    now!("$1"),
    "
WHERE state = 'dead' AND ($2::TEXT IS NULL OR handler = $2)"
);

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
