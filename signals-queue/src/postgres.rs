//! The jobs table on PostgreSQL: the schema of `sqlite_sql.rs` in PostgreSQL's types (times are
//! milliseconds since the Unix epoch in both; the payload is `jsonb`, the event id a `uuid`),
//! and the same state transitions ([`lifecycle`](crate::lifecycle)), one statement each.
//!
//! Time is the database's: every statement that reads or writes a time takes it as
//! `COALESCE($n, <the server's clock>)`, and the worker binds `NULL` unless a test gave it a
//! manual [`Clock`](crate::Clock). The life cycle (claims, leases, rescues, backoffs) never
//! compares two machines' clocks; two operator statements do: `purge_done`'s cutoff and the
//! oldest pending job's age in `stats` are computed on the caller's clock against times the
//! server wrote, so a caller whose clock is off by a minute purges or reports a minute off.
//!
//! The claim locks its rows with `FOR UPDATE SKIP LOCKED` in a materialized CTE, so concurrent
//! claims skip each other's rows instead of waiting for them, and the `UPDATE` touches exactly
//! the rows the CTE locked.

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

/// The schema of the jobs table that `signals_jobs` names on the search path (the trigger's
/// `TG_TABLE_SCHEMA`), or the current schema before it exists (where the migration creates it).
macro_rules! table_schema {
    () => {
        "COALESCE((SELECT n.nspname::TEXT FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = to_regclass('signals_jobs')), current_schema())"
    };
}

/// The newest migration this crate knows, and the oldest it can run against: 4 splits
/// `pending` into `available` (due) and `scheduled` (waiting out a `run_at`), keeps the
/// producer's JSON text (`body`) and claims through an index that starts at the handler; 5
/// marks the done rows the done counts counted (`counted`), so that a purge takes off only
/// those (rows done before migration 4, or by the previous release during a deploy, were never
/// counted); 6 the operator's records: each job's attempts (`attempts`, `started_at`), its
/// outcome beside a terminal state (`outcome`: `discarded` or `cancelled` beside `dead`),
/// workers' labels, paused queues (`signals_queues`) and the handlers workers run
/// (`signals_handlers`); it drops the two indexes only releases before 4 claimed through; 7
/// the fleet's leader (`signals_leader`), the ticks periodic signals fired (`signals_ticks`)
/// and which deaths were announced (`announced_at`, `signals_jobs_unannounced`); 8 coalescing
/// (`coalesce_key`, the trigger `signals_jobs_fold` and the partial unique index
/// `signals_jobs_coalesce`).
pub(crate) const SCHEMA_VERSION: i64 = 8;

/// The compatibility level a migrated table records in `signals_queue_schema` (which releases
/// before migration 4 read, refusing a higher one): the oldest schema whose code still works
/// against this table. Migration 4 is an expansion, so the release before it keeps working:
/// it claims only `pending` rows (which it writes itself; this release never claims them
/// until they are due) and writes `payload`; rows this release writes are `available` or
/// `scheduled`, with the JSON in `body` and `null` in `payload`.
pub(crate) const COMPATIBLE_FROM: i64 = 3;

/// One step of a migration: a statement run in a transaction of its own under `lock_timeout`,
/// or (`concurrent`) outside any transaction: `CREATE INDEX CONCURRENTLY` builds while
/// writers write.
pub(crate) struct Step {
    pub(crate) sql: &'static str,
    pub(crate) concurrent: bool,
}

const fn tx(sql: &'static str) -> Step {
    Step {
        sql,
        concurrent: false,
    }
}

const fn concurrently(sql: &'static str) -> Step {
    Step {
        sql,
        concurrent: true,
    }
}

/// The migrations, in order: `(version, steps)`. Each step is idempotent (`IF NOT EXISTS`), so
/// a migration cut off half way (a `lock_timeout`, a lost connection, an invalid index left by
/// a failed `CONCURRENTLY`, which the step drops first) is run again whole by the next
/// [`migrate`](crate::AsyncQueue::migrate). No step rewrites the table: columns are added
/// nullable or with a constant default, a new check is added `NOT VALID` and validated apart
/// (which reads the table without blocking writers), and storage settings apply to new rows.
///
/// Migrations 1 to 3 (the jobs table, the broker's inbox, workers' leases) are one step list
/// here: tables of those versions took them in one transaction.
///
/// The statement-level trigger sends one notification on the channel `signals_jobs_<md5 of the
/// schema's name>` per inserting statement (so applications in other schemas of the database
/// are not woken; the hash keeps the channel under PostgreSQL's 63 bytes whatever the schema's
/// name); PostgreSQL delivers it when the transaction commits (never for one that rolls back)
/// and folds identical notifications of one transaction into one: a hint for idle workers,
/// never the delivery path. A notification takes a lock every committing notifier shares: a
/// write-heavy application may turn it off for its role or database
/// (`ALTER ROLE app SET signals.notify = 'off'`) and let workers poll.
pub(crate) const MIGRATIONS: &[(i64, &[Step])] = &[
    (
        3,
        &[
            tx("
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
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'signals_jobs_notify'
                   AND tgrelid = 'signals_jobs'::regclass) THEN
        CREATE TRIGGER signals_jobs_notify AFTER INSERT ON signals_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION signals_jobs_notify();
    END IF;
END $$;"),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_pending
    ON signals_jobs (priority DESC, run_at, id) WHERE state = 'pending'",
            ),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_suspect
    ON signals_jobs (run_at) WHERE state = 'pending' AND crashes > 0",
            ),
            concurrently("DROP INDEX CONCURRENTLY IF EXISTS signals_jobs_running"),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_worker
    ON signals_jobs (worker) WHERE state = 'running'",
            ),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_done
    ON signals_jobs (finished_at) WHERE state = 'done'",
            ),
        ],
    ),
    (
        4,
        &[
            // Metadata only: a nullable column, a new default.
            tx("
ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS body TEXT,
    ALTER COLUMN payload SET DEFAULT 'null'"),
            tx("
ALTER TABLE signals_jobs DROP CONSTRAINT IF EXISTS signals_jobs_state_check,
    ADD CONSTRAINT signals_jobs_state_check CHECK (state IN
        ('available', 'scheduled', 'pending', 'running', 'done', 'dead')) NOT VALID"),
            tx("ALTER TABLE signals_jobs VALIDATE CONSTRAINT signals_jobs_state_check"),
            // The jobs table is the hottest of the database: room on each page for a row's
            // next version, and vacuum after 1 % of it changed rather than 20 %.
            tx("
ALTER TABLE signals_jobs SET (fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 1)"),
            tx("ALTER TABLE signals_workers SET (fillfactor = 50)"),
            // Done jobs by handler, kept by the statements that complete and purge them, in
            // 16 shards (so that concurrent completions rarely wait for one another) and one
            // for purges (-1): `stats` never counts done rows.
            tx("
CREATE TABLE IF NOT EXISTS signals_job_counts (
    handler TEXT    NOT NULL,
    shard   INTEGER NOT NULL,
    done    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (handler, shard)
)"),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_claim
    ON signals_jobs (handler, priority DESC, run_at, id) WHERE state = 'available'",
            ),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_scheduled
    ON signals_jobs (handler, run_at) WHERE state IN ('scheduled', 'pending')",
            ),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_suspects
    ON signals_jobs (handler, run_at) WHERE state = 'available' AND crashes > 0",
            ),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_dead
    ON signals_jobs (id) WHERE state = 'dead'",
            ),
            concurrently(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_inbox_received
    ON signals_inbox (received_at)",
            ),
        ],
    ),
    (
        5,
        &[
            // Metadata only: a constant default.
            tx("ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS counted BOOLEAN NOT NULL DEFAULT false"),
        ],
    ),
    (
        6,
        &[
            // Metadata only: nullable columns, new tables.
            tx("
ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS outcome TEXT,
    ADD COLUMN IF NOT EXISTS attempts JSONB,
    ADD COLUMN IF NOT EXISTS started_at BIGINT,
    ADD COLUMN IF NOT EXISTS claimed_by TEXT"),
            tx("ALTER TABLE signals_workers ADD COLUMN IF NOT EXISTS label TEXT"),
            tx("
CREATE TABLE IF NOT EXISTS signals_queues (
    name        TEXT    PRIMARY KEY,
    paused      BOOLEAN NOT NULL DEFAULT false,
    updated_at  BIGINT  NOT NULL
)"),
            tx("
CREATE TABLE IF NOT EXISTS signals_handlers (
    name          TEXT    PRIMARY KEY,
    signal        TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    max_attempts  INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    seen_at       BIGINT  NOT NULL
)"),
            // Only releases before 4 claimed `pending` rows through these.
            concurrently("DROP INDEX CONCURRENTLY IF EXISTS signals_jobs_pending"),
            concurrently("DROP INDEX CONCURRENTLY IF EXISTS signals_jobs_suspect"),
        ],
    ),
    (
        7,
        &[
            tx("
CREATE TABLE IF NOT EXISTS signals_leader (
    name        TEXT    PRIMARY KEY,
    worker      BIGINT  NOT NULL,
    elected_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
)"),
            tx("ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS announced_at BIGINT"),
            // The jobs already dead: announced, so that the first leader does not announce
            // every death of the last fourteen days (dead rows are few: retention prunes them).
            tx("UPDATE signals_jobs SET announced_at = finished_at WHERE state = 'dead' AND announced_at IS NULL"),
            concurrently("
CREATE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_unannounced ON signals_jobs (id)
WHERE state = 'dead' AND outcome IS NULL AND announced_at IS DISTINCT FROM finished_at"),
            tx("
CREATE TABLE IF NOT EXISTS signals_ticks (
    signal    TEXT    NOT NULL,
    tick_at   BIGINT  NOT NULL,
    fired_at  BIGINT  NOT NULL,
    worker    BIGINT,
    PRIMARY KEY (signal, tick_at)
)"),
        ],
    ),
    (
        8,
        &[
            // Metadata only: a nullable column.
            tx("ALTER TABLE signals_jobs ADD COLUMN IF NOT EXISTS coalesce_key TEXT"),
            // Coalescing's one rule for every statement that moves a job back to waiting (a
            // failure's retry, a snooze, a rescue, a job given back, an operator's retry, and
            // the previous release's statements during a rolling deploy): when a waiting job of
            // the same handler and key exists, the returning one folds into it: it ends `dead`
            // with the outcome `cancelled`, its attempts kept, and the waiting one runs in its
            // place. Before the index, so that no statement meets the index without it.
            tx("
CREATE OR REPLACE FUNCTION signals_jobs_fold() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    waiting BIGINT;
BEGIN
    -- The table the trigger fired on, whatever the session's search_path.
    EXECUTE format('SELECT id FROM %I.signals_jobs
                    WHERE handler = $1 AND coalesce_key = $2
                      AND state IN (''available'', ''scheduled'', ''pending'') AND id <> $3
                    LIMIT 1', TG_TABLE_SCHEMA)
        INTO waiting USING NEW.handler, NEW.coalesce_key, NEW.id;
    IF waiting IS NOT NULL THEN
        NEW.state := 'dead';
        NEW.outcome := 'cancelled';
        NEW.token := NULL;
        NEW.worker := NULL;
        NEW.lease_until := NULL;
        NEW.finished_at := (extract(epoch FROM statement_timestamp()) * 1000)::BIGINT;
        NEW.last_error := 'coalesced: job ' || waiting
            || ' of the same key was waiting, and runs in its place';
    END IF;
    RETURN NEW;
END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'signals_jobs_fold'
                   AND tgrelid = 'signals_jobs'::regclass) THEN
        CREATE TRIGGER signals_jobs_fold BEFORE UPDATE OF state ON signals_jobs
            FOR EACH ROW
            WHEN (NEW.coalesce_key IS NOT NULL
                  AND NEW.state IN ('available', 'scheduled', 'pending')
                  AND OLD.state NOT IN ('available', 'scheduled', 'pending'))
            EXECUTE FUNCTION signals_jobs_fold();
    END IF;
END $$;"),
            concurrently("
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS signals_jobs_coalesce
ON signals_jobs (handler, coalesce_key)
WHERE coalesce_key IS NOT NULL AND state IN ('available', 'scheduled', 'pending')"),
        ],
    ),
];

/// `attempts` of the row `$job` with the attempt that ends at `$now` appended: when it started
/// (the claim's `started_at`), how long it ran, the worker that ran it (`claimed_by`), and
/// `$error`. Written by the statement that records a failure, a snooze, a discard or a rescue;
/// a successful attempt is the row's own `started_at`, `finished_at` and `claimed_by` (see
/// `sqlite_sql`).
macro_rules! append_attempt {
    ($job:literal, $now:expr, $error:literal) => {
        concat!(
            "COALESCE(",
            $job,
            ".attempts, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
        'started_at', ",
            $job,
            ".started_at, 'duration_ms', ",
            $now,
            " - ",
            $job,
            ".started_at, 'worker', ",
            $job,
            ".claimed_by, 'error', ",
            $error,
            "::TEXT))"
        )
    };
}

/// The tables that record migrations: `signals_queue_schema` holds the compatibility level
/// (releases before migration 4 read it), `signals_queue_migrations` what ran.
pub(crate) const MIGRATION_TABLES: &str = "
CREATE TABLE IF NOT EXISTS signals_queue_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS signals_queue_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Whether the jobs table exists (only new tables are migrated in one transaction).
pub(crate) const JOBS_EXIST: &str = "SELECT to_regclass('signals_jobs') IS NOT NULL";

/// Whether the schema table exists: before the first migration it does not.
pub(crate) const HAS_SCHEMA: &str = "SELECT to_regclass('signals_queue_schema') IS NOT NULL";

/// The compatibility level (releases before migration 4 read it), `NULL` if none is recorded.
pub(crate) const LEVEL: &str = "SELECT MAX(version)::BIGINT FROM signals_queue_schema";

/// Whether the migrations table exists: releases before migration 4 did not make it (their
/// newest migration is then the level they recorded).
pub(crate) const HAS_MIGRATIONS: &str =
    "SELECT to_regclass('signals_queue_migrations') IS NOT NULL";

/// The newest migration that ran.
pub(crate) const APPLIED: &str = "SELECT MAX(version)::BIGINT FROM signals_queue_migrations";

/// An index a failed `CREATE INDEX CONCURRENTLY` left invalid, by name (`$1`): dropped, then
/// built again.
pub(crate) const INVALID_INDEX: &str = concat!(
    "
SELECT c.relname::TEXT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND n.nspname = ",
    table_schema!(),
    " AND c.relname LIKE 'signals\\_%'"
);

/// The channel an operator's cancellations are told on (see [`CANCEL_NOTIFY`]).
pub(crate) const CANCEL_CHANNEL: &str =
    concat!("SELECT 'signals_cancel_' || md5(", table_schema!(), ")");

/// Tells the workers of this schema, at commit, that the jobs `$1` (a JSON array) were
/// cancelled: the worker running one drops it at once. (Workers also look every tick.)
pub(crate) const CANCEL_NOTIFY: &str = concat!(
    "SELECT pg_notify('signals_cancel_' || md5(",
    table_schema!(),
    "), $1)"
);

/// Records that a migration ran.
pub(crate) const MIGRATED: &str = "
INSERT INTO signals_queue_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING";

/// The channel the trigger notifies (`TG_TABLE_SCHEMA`: the schema of the jobs table that
/// `signals_jobs` resolves to on the search path, which need not be its first schema).
pub(crate) const CHANNEL: &str = concat!("SELECT 'signals_jobs_' || md5(", table_schema!(), ")");

/// Serializes concurrent migrations of one schema (a constant spelling "signals", and the
/// schema): a session lock, since `CREATE INDEX CONCURRENTLY` runs outside any transaction.
/// Tried, never waited for: a session waiting in `pg_advisory_lock` holds a snapshot, which
/// the lock holder's `CREATE INDEX CONCURRENTLY` waits for (a deadlock). `true` if taken.
pub(crate) const TRY_LOCK: &str = concat!(
    "SELECT pg_try_advisory_lock(7359109, hashtext(",
    table_schema!(),
    "))"
);

/// Releases [`TRY_LOCK`].
pub(crate) const UNLOCK: &str = concat!(
    "SELECT pg_advisory_unlock(7359109, hashtext(",
    table_schema!(),
    "))"
);

/// Records the compatibility level.
pub(crate) const SET_VERSION: &str = "
INSERT INTO signals_queue_schema (version)
SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM signals_queue_schema WHERE version >= $1)";

pub(crate) const ENQUEUE: &str = concat!(
    "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at)
SELECT $1::uuid, $2, $3, $4, $5, $6,
       CASE WHEN $9::BIGINT > 0 THEN 'scheduled' ELSE 'available' END, $7, t.now + $9::BIGINT,
       t.now
FROM (SELECT ",
    now!("$8"),
    " AS now) AS t"
);

/// The jobs of one `notify` (several queued handlers) in one statement: arrays of handler,
/// queue, priority, payload, max attempts and delay (ms), in run order. A delayed job is
/// `scheduled` until due: claims do not read it (their index holds `available` rows only).
pub(crate) const ENQUEUE_MANY: &str = concat!(
    "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at)
SELECT $1::uuid, $2, job.handler, job.queue, job.priority, job.body,
       CASE WHEN job.delay > 0 THEN 'scheduled' ELSE 'available' END,
       job.max_attempts, t.now + job.delay, t.now
FROM unnest($3::text[], $4::text[], $5::int4[], $6::text[], $7::int4[], $9::int8[])
         WITH ORDINALITY AS job (handler, queue, priority, body, max_attempts, delay, n),
     (SELECT ",
    now!("$8"),
    " AS now) AS t
ORDER BY job.n"
);

/// The jobs of a `notify` of which one at least has a coalescing key (`coalesce = ...`):
/// [`ENQUEUE_MANY`]'s arrays and the keys (`$10`). A key that a job of the handler not yet
/// started holds already writes nothing (`signals_jobs_coalesce`, a partial unique index: safe
/// under concurrent writers, the second waits for the first to commit). The statements without
/// keys do not name the column, so that a program of this release notifies against a schema it
/// has not migrated yet, as long as none of its handlers coalesces.
pub(crate) const ENQUEUE_COALESCING: &str = concat!(
    "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at,
     coalesce_key)
SELECT $1::uuid, $2, job.handler, job.queue, job.priority, job.body,
       CASE WHEN job.delay > 0 THEN 'scheduled' ELSE 'available' END,
       job.max_attempts, t.now + job.delay, t.now, job.coalesce_key
FROM unnest($3::text[], $4::text[], $5::int4[], $6::text[], $7::int4[], $9::int8[], $10::text[])
         WITH ORDINALITY AS job (handler, queue, priority, body, max_attempts, delay, coalesce_key, n),
     (SELECT ",
    now!("$8"),
    " AS now) AS t
ORDER BY job.n
ON CONFLICT DO NOTHING"
);

/// Whether the row's `signal` (a full path) names the signal type `$name` (a module may move).
macro_rules! of_signal {
    ($name:literal) => {
        concat!(
            "(signal = ",
            $name,
            " OR right(signal, length(",
            $name,
            ") + 2) = '::' || ",
            $name,
            ")"
        )
    };
}

/// The claim of [`CLAIM`] and [`CLAIM_SUSPECT`]: `$filter` picks suspects or not.
macro_rules! claim {
    ($filter:literal, $order:literal) => {
        concat!(
            "
WITH next AS MATERIALIZED (
    SELECT job.id FROM jsonb_to_recordset($2::jsonb) AS h (name TEXT, signal TEXT)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM signals_jobs
        WHERE state = 'available' AND handler = h.name AND ",
            of_signal!("h.signal"),
            " AND ",
            $filter,
            " AND run_at <= ",
            now!("$1"),
            "
        ORDER BY ",
            $order,
            "
        LIMIT $3
        FOR UPDATE SKIP LOCKED) AS job
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT $3)
UPDATE signals_jobs AS job
SET state = 'running', attempt = job.attempt + 1, token = $4, worker = $5, lease_until = NULL,
    claimed_by = $6, started_at = ",
            now!("$1"),
            "
FROM next WHERE job.id = next.id
RETURNING job.id, job.event_id::text, job.handler, COALESCE(job.body, job.payload::text),
          job.attempt, job.priority, job.run_at, job.created_at"
        )
    };
}

/// available → running for up to `$3` due jobs of the handlers `$2` (a JSON array of
/// `{"name", "signal"}`: a row of another signal under the same name is not taken), in claim
/// order; charges the attempt (the handler starts now). Each handler's candidates come from
/// the claim index starting at that handler, so jobs of handlers this worker does not run
/// (another service's backlog, an outbox during a broker outage) and jobs waiting out a
/// `run_at` (`scheduled`, outside the index) are never read. Suspects are skipped.
pub(crate) const CLAIM: &str = claim!("crashes = 0", "priority DESC, run_at, id");

/// [`CLAIM`] for suspects, through their own small index: those the claimer reserved
/// ([`RESERVE_SUSPECT`]) or no one did.
pub(crate) const CLAIM_SUSPECT: &str =
    claim!("crashes > 0 AND (worker IS NULL OR worker = $5)", "run_at");

/// running → available again for the jobs of the claim `$1`, whose reply was lost: the
/// attempt it charged is given back (no handler ran).
pub(crate) const UNCLAIM: &str = "
UPDATE signals_jobs
SET state = 'available', attempt = GREATEST(attempt - 1, 0), token = NULL, worker = NULL
WHERE token = $1 AND state = 'running'";

/// running → available again for the `(id, token)` pairs of `$1` (a JSON array): jobs fetched
/// ahead that a shutdown gives back before they started; their attempts are uncharged.
pub(crate) const GIVE_BACK: &str = "
UPDATE signals_jobs AS job
SET state = 'available', attempt = GREATEST(job.attempt - 1, 0), token = NULL, worker = NULL
FROM (SELECT (pair->>0)::BIGINT AS id, (pair->>1)::BIGINT AS token
      FROM jsonb_array_elements($1::jsonb) AS pair) AS back
WHERE job.id = back.id AND job.token = back.token AND job.state = 'running'";

/// running → done in the job's own transaction, only while its claim holds it, counted in the
/// done counts (a shard by job id: the counter row is locked only from here to the commit,
/// which follows at once). The row lock it takes is the fence: a rescue skips a locked row.
/// One row affected if the claim held the job.
pub(crate) const COMPLETE: &str = concat!(
    "
WITH done AS (
    UPDATE signals_jobs SET state = 'done', finished_at = ",
    now!("$1"),
    ", worker = NULL, counted = true
    WHERE id = $2 AND token = $3 AND state = 'running'
    RETURNING handler, id)
INSERT INTO signals_job_counts (handler, shard, done)
SELECT handler, (id % 16)::INT, 1 FROM done
ON CONFLICT (handler, shard) DO UPDATE SET done = signals_job_counts.done + 1"
);

/// running → done for the `[id, token]` pairs of `$2` (the completer's flush, a relay's acked
/// messages), counted in the done counts in the same statement; the completed jobs' handlers.
pub(crate) const COMPLETE_MANY: &str = concat!(
    "
WITH done AS (
    UPDATE signals_jobs AS job SET state = 'done', finished_at = ",
    now!("$1"),
    ", worker = NULL, counted = true
    FROM (SELECT (pair->>0)::BIGINT AS id, (pair->>1)::BIGINT AS token
          FROM jsonb_array_elements($2::jsonb) AS pair) AS done
    WHERE job.id = done.id AND job.token = done.token AND job.state = 'running'
    RETURNING job.handler, job.id),
counted AS (
    INSERT INTO signals_job_counts (handler, shard, done)
    SELECT handler, (MIN(id) % 16)::INT, COUNT(*) FROM done GROUP BY handler ORDER BY handler
    ON CONFLICT (handler, shard) DO UPDATE
    SET done = signals_job_counts.done + EXCLUDED.done
    RETURNING 1)
SELECT handler FROM done"
);

/// running → scheduled after `$3` ms (available at once for none), or dead (no attempts
/// left, `$1`: cannot run, or written more than `$7` ms ago).
pub(crate) const FAIL: &str = concat!(
    "
UPDATE signals_jobs
SET state = CASE WHEN $8 = 'discard' THEN 'dead'
                 WHEN $8 = 'fail' AND ($1 OR attempt >= max_attempts
                                      OR created_at < t.now - $7::BIGINT) THEN 'dead'
                 WHEN $3::BIGINT > 0 THEN 'scheduled' ELSE 'available' END,
    finished_at = CASE WHEN $8 = 'discard' OR ($8 = 'fail' AND ($1 OR attempt >= max_attempts
                           OR created_at < t.now - $7::BIGINT))
                       THEN t.now ELSE NULL END,
    outcome = CASE WHEN $8 = 'discard' THEN 'discarded' ELSE outcome END,
    attempt = CASE WHEN $8 = 'snooze' THEN GREATEST(attempt - 1, 0) ELSE attempt END,
    run_at = t.now + $3::BIGINT, token = NULL, worker = NULL, last_error = $4,
    attempts = ",
    append_attempt!("signals_jobs", "t.now", "$4"),
    "
FROM (SELECT ",
    now!("$2"),
    " AS now) AS t
WHERE id = $5 AND token = $6 AND state = 'running'"
);

/// The jobs running under worker `$1` (id, token, attempt), through the index of running jobs
/// by worker: maintenance looks for rows nothing of the worker holds any more.
pub(crate) const RUNNING_OF: &str =
    "SELECT id, token, attempt FROM signals_jobs WHERE state = 'running' AND worker = $1";

/// Renews the lease of worker `$1` for `$3` ms: one row, whatever it runs.
pub(crate) const HEARTBEAT: &str = concat!(
    "
INSERT INTO signals_workers (id, lease_until, lease_ms, beats, label)
VALUES ($1, ",
    now!("$2"),
    " + $3::BIGINT, $3::BIGINT, 1, $4)
ON CONFLICT (id) DO UPDATE
SET lease_until = EXCLUDED.lease_until, lease_ms = EXCLUDED.lease_ms,
    beats = signals_workers.beats + 1"
);

/// Forgets a worker that stopped: its row is deleted when no job runs under its id, else its
/// lease is made to lapse now (jobs whose outcome it could not record), so that the next
/// [`RESCUE`] finds them from the worker's row, and [`PRUNE_WORKERS`] deletes it afterwards.
/// Reads the worker's running jobs through `signals_jobs_worker`.
pub(crate) const RETIRE: &str = concat!(
    "
WITH held AS (
    SELECT EXISTS (SELECT 1 FROM signals_jobs WHERE state = 'running' AND worker = $1) AS running),
lapsed AS (
    UPDATE signals_workers SET lease_until = ",
    now!("$2"),
    " - 1
    WHERE id = $1 AND (SELECT running FROM held)
    RETURNING 1)
DELETE FROM signals_workers WHERE id = $1 AND NOT (SELECT running FROM held)"
);

/// running → scheduled after a backoff (base `$2`, cap `$3` ms), a suspect from now on, or
/// dead when out of attempts, for every job whose worker's lease expired (by the server's
/// clock), and for running rows a release before workers' leases left without a worker once
/// their own lease expired. Starts from the workers whose lease lapsed (a scan of
/// `signals_workers`: one row per worker) and reaches their jobs through the index of running
/// jobs by worker (`signals_jobs_worker`), as it does the rows without a worker (`IS NULL`):
/// the running jobs of live workers are never read. A worker leaves no row only by
/// [`PRUNE_WORKERS`] (once none of its jobs runs) or [`RETIRE`] (likewise); rows of workers
/// that left none anyway (the previous release deletes its workers' rows, an operator may)
/// get one from [`ADOPT_WORKERS`]. Skips locked rows: a row some open transaction is
/// completing is not abandoned.
pub(crate) const RESCUE: &str = concat!(
    "
UPDATE signals_jobs AS job
SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'scheduled' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN t.now ELSE NULL END,
    run_at = t.now + (LEAST($3::FLOAT8,
        $2::FLOAT8 * (1::BIGINT << LEAST(GREATEST(attempt - 1, 0), 30))) * random())::BIGINT,
    token = NULL, worker = NULL, crashes = crashes + 1, last_error = $4,
    attempts = ",
    append_attempt!("job", "t.now", "$4"),
    "
FROM (SELECT ",
    now!("$1"),
    " AS now) AS t
WHERE job.id IN (
    SELECT running.id FROM signals_workers AS w
    CROSS JOIN LATERAL (
        SELECT id FROM signals_jobs WHERE state = 'running' AND worker = w.id
        FOR UPDATE SKIP LOCKED) AS running
    WHERE w.lease_until < ",
    now!("$1"),
    "
    UNION ALL
    SELECT legacy.id FROM (
        SELECT id FROM signals_jobs
        WHERE state = 'running' AND worker IS NULL AND lease_until < ",
    now!("$1"),
    "
        FOR UPDATE SKIP LOCKED) AS legacy)"
);

/// A lapsed row in `signals_workers` for every worker that running jobs name and that has
/// none (its jobs are [`RESCUE`]d next), so that every orphaned running job belongs to a known
/// lapsed worker. Walks the distinct workers of `signals_jobs_worker` one index probe each (a
/// loose index scan: the cost is the number of workers with running jobs, not of their jobs);
/// maintenance runs it once per lease, not every tick.
pub(crate) const ADOPT_WORKERS: &str = concat!(
    "
WITH RECURSIVE seen (worker) AS (
    (SELECT worker FROM signals_jobs WHERE state = 'running' AND worker IS NOT NULL
     ORDER BY worker LIMIT 1)
    UNION ALL
    SELECT (SELECT job.worker FROM signals_jobs AS job
            WHERE job.state = 'running' AND job.worker > seen.worker
            ORDER BY job.worker LIMIT 1)
    FROM seen WHERE seen.worker IS NOT NULL)
INSERT INTO signals_workers (id, lease_until, lease_ms)
SELECT seen.worker, ",
    now!("$1"),
    " - 1, 0 FROM seen
WHERE seen.worker IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM signals_workers AS w WHERE w.id = seen.worker)
ON CONFLICT (id) DO NOTHING"
);

/// Forgets the workers whose lease expired once none of their jobs runs (a [`RESCUE`] skips
/// locked rows: their worker stays known until they are rescued or finished); one probe of
/// `signals_jobs_worker` per lapsed worker.
pub(crate) const PRUNE_WORKERS: &str = concat!(
    "
DELETE FROM signals_workers AS w WHERE w.lease_until < ",
    now!("$1"),
    "
  AND NOT EXISTS (SELECT 1 FROM signals_jobs WHERE state = 'running' AND worker = w.id)"
);

/// scheduled → available for up to 1,000 due jobs of the handlers `$2` (and `pending` rows a
/// release before migration 4 wrote, once due); how many. Each worker promotes the jobs it can
/// run, through an index that starts at the handler.
pub(crate) const PROMOTE: &str = concat!(
    "
UPDATE signals_jobs SET state = 'available'
WHERE id IN (
    SELECT job.id FROM jsonb_to_recordset($2::jsonb) AS h (name TEXT, signal TEXT)
    CROSS JOIN LATERAL (
        SELECT id FROM signals_jobs
        WHERE state IN ('scheduled', 'pending') AND handler = h.name AND ",
    of_signal!("h.signal"),
    " AND run_at <= ",
    now!("$1"),
    "
        ORDER BY run_at LIMIT 1000
        FOR UPDATE SKIP LOCKED) AS job)"
);

/// Wakes the workers listening on the jobs table's channel (after a promotion).
pub(crate) const WAKE: &str = concat!(
    "SELECT pg_notify('signals_jobs_' || md5(",
    table_schema!(),
    "), '')"
);

/// Reserves for worker `$3` a due suspect of these handlers (`$2`), which it will run alone:
/// the oldest one that no live worker reserved (its `worker`, while `available`), due for at
/// least `$4` ms (0 for an idle worker; a lease for a busy one, which would have to let its
/// running jobs finish first: an idle worker takes it before). One worker drains for a suspect,
/// not every worker that runs its handler. Whether the worker holds one.
pub(crate) const RESERVE_SUSPECT: &str = concat!(
    "
UPDATE signals_jobs SET worker = $3
WHERE id IN (
    SELECT due.id FROM jsonb_to_recordset($2::jsonb) AS h (name TEXT, signal TEXT)
    CROSS JOIN LATERAL (SELECT id, run_at FROM signals_jobs
        WHERE state = 'available' AND crashes > 0 AND handler = h.name AND ",
    of_signal!("h.signal"),
    " AND run_at <= ",
    now!("$1"),
    " - $4::BIGINT
          AND (worker IS NULL OR worker = $3 OR NOT EXISTS (
              SELECT 1 FROM signals_workers AS w
              WHERE w.id = signals_jobs.worker AND w.lease_until >= ",
    now!("$1"),
    "))
        ORDER BY run_at LIMIT 1
        FOR UPDATE SKIP LOCKED) AS due
    ORDER BY due.run_at LIMIT 1)"
);

/// dead → available, attempts and crashes reset; of the handler `$2` only, unless NULL.
pub(crate) const RETRY_DEAD: &str = concat!(
    "
UPDATE signals_jobs
SET state = 'available', attempt = 0, crashes = 0, finished_at = NULL, run_at = ",
    now!("$1"),
    "
WHERE state = 'dead' AND outcome IS NULL AND ($2::TEXT IS NULL OR handler = $2)"
);

/// Deletes up to 10,000 done jobs that finished before `$1` (the caller repeats while a
/// statement deletes that many), and takes those the done counts counted off them, in one
/// statement: no statement holds locks on millions of rows. How many. (Counter rows are
/// taken in handler order, as by every statement that writes them: no two wait on each other
/// crosswise.)
pub(crate) const PURGE_DONE: &str = "
WITH gone AS (
    DELETE FROM signals_jobs WHERE id IN (
        SELECT id FROM signals_jobs WHERE state = 'done' AND finished_at < $1 LIMIT 10000)
    RETURNING handler, counted),
counted AS (
    INSERT INTO signals_job_counts (handler, shard, done)
    SELECT handler, -1, -COUNT(*) FROM gone WHERE counted GROUP BY handler ORDER BY handler
    ON CONFLICT (handler, shard) DO UPDATE
    SET done = signals_job_counts.done + EXCLUDED.done
    RETURNING 1)
SELECT COUNT(*)::BIGINT FROM gone";

/// Job counts by handler and state (the three waiting states as `pending`), one part per
/// partial index, each filtered by exactly that index's predicate, so that no part reads done
/// rows: `available` through `signals_jobs_claim`, `scheduled` and `pending` through
/// `signals_jobs_scheduled`, `running` through `signals_jobs_worker`, `dead` through
/// `signals_jobs_dead`. (A filter no single index covers, `state IN ('running', 'dead')`,
/// scanned the table.) Done counts from `signals_job_counts`, which the statements that
/// complete and purge jobs keep.
pub(crate) const STATS: &str = "
SELECT handler, 'pending', COUNT(*)::BIGINT, MIN(created_at)::BIGINT FROM (
    SELECT handler, created_at FROM signals_jobs WHERE state = 'available'
    UNION ALL
    SELECT handler, created_at FROM signals_jobs WHERE state IN ('scheduled', 'pending')
) AS waiting GROUP BY handler
UNION ALL
SELECT handler, 'running', COUNT(*)::BIGINT, NULL FROM signals_jobs
WHERE state = 'running' GROUP BY handler
UNION ALL
SELECT handler, 'dead', COUNT(*)::BIGINT, NULL FROM signals_jobs
WHERE state = 'dead' AND outcome IS NULL GROUP BY handler
UNION ALL
SELECT handler, 'done', SUM(done)::BIGINT, NULL FROM signals_job_counts
GROUP BY handler HAVING SUM(done) > 0";

/// The waiting jobs of the signal `$1` (its full path), oldest first: (id, handler, queue,
/// payload, event id). The test kit's read; a scan.
#[cfg(feature = "testing")]
pub(crate) const WAITING_OF_SIGNAL: &str = "
SELECT id, handler, queue, COALESCE(body, payload::text), event_id::text FROM signals_jobs
WHERE signal = $1 AND state IN ('available', 'scheduled', 'pending') ORDER BY id";

/// Up to `$2` dead jobs after the id `$1`, oldest first.
pub(crate) const DEAD_JOBS: &str = "
SELECT id, handler, attempt, last_error, COALESCE(body, payload::text) FROM signals_jobs
WHERE state = 'dead' AND outcome IS NULL AND id > $1 ORDER BY id LIMIT $2";

/// The due jobs of these publishing functions (`$1`): how many, and the oldest's due time
/// (the outbox a relay should be emptying), through `signals_jobs_claim` per function.
pub(crate) const OUTBOX_BACKLOG: &str = concat!(
    "
SELECT COUNT(*)::BIGINT, MIN(GREATEST(job.run_at, job.created_at))::BIGINT
FROM jsonb_to_recordset($1::jsonb) AS h (name TEXT, signal TEXT)
CROSS JOIN LATERAL (
    SELECT run_at, created_at FROM signals_jobs
    WHERE state = 'available' AND handler = h.name AND ",
    of_signal!("h.signal"),
    ") AS job"
);

/// 1 while a job of these handlers (`$1`) is due, waits out a retry (or a snooze), or runs,
/// else 0 (a job not yet due for its first attempt, a `delay`, does not count): an index probe per handler
/// and state (each in its index's order, so that the planner never prefers a scan that
/// expects to meet one early; running rows are few: at most every worker's concurrency).
pub(crate) const BUSY: &str = concat!(
    "
SELECT EXISTS (
    SELECT 1 FROM jsonb_to_recordset($1::jsonb) AS h (name TEXT, signal TEXT)
    CROSS JOIN LATERAL (
        (SELECT 1 FROM signals_jobs WHERE state = 'available' AND handler = h.name AND ",
    of_signal!("h.signal"),
    "
         ORDER BY priority DESC, run_at, id LIMIT 1)
        UNION ALL
        (SELECT 1 FROM signals_jobs WHERE state IN ('scheduled', 'pending') AND handler = h.name
         AND ",
    of_signal!("h.signal"),
    "
         AND (run_at <= ",
    now!("$2"),
    " OR attempt > 0 OR attempts IS NOT NULL)
         ORDER BY run_at LIMIT 1)
        UNION ALL
        (SELECT 1 FROM signals_jobs WHERE state = 'running' AND handler = h.name AND ",
    of_signal!("h.signal"),
    " LIMIT 1)
    ) AS any_job
)::INT4::INT8"
);

/// running → scheduled after each job's own backoff (available at once for none), or dead (no
/// attempts left, or written more than `$3` ms ago), for the `[id, token, delay ms, error]`
/// items of `$2` still held by those claims: a batch's failures in one statement (a relay's
/// failed publishes). How many rows changed.
pub(crate) const FAIL_MANY: &str = concat!(
    "
UPDATE signals_jobs AS job
SET state = CASE WHEN job.attempt >= job.max_attempts OR job.created_at < t.now - $3::BIGINT
                 THEN 'dead' WHEN f.delay > 0 THEN 'scheduled' ELSE 'available' END,
    finished_at = CASE WHEN job.attempt >= job.max_attempts
                            OR job.created_at < t.now - $3::BIGINT
                       THEN t.now ELSE NULL END,
    run_at = t.now + f.delay, token = NULL, worker = NULL, last_error = f.error,
    attempts = ",
    append_attempt!("job", "t.now", "f.error"),
    "
FROM (SELECT (item->>0)::BIGINT AS id, (item->>1)::BIGINT AS token,
             (item->>2)::BIGINT AS delay, item->>3 AS error
      FROM jsonb_array_elements($2::jsonb) AS item) AS f,
     (SELECT ",
    now!("$1"),
    " AS now) AS t
WHERE job.id = f.id AND job.token = f.token AND job.state = 'running'"
);

/// How much of the table a claim reads, from PostgreSQL's own accounting: not a timing.
#[cfg(test)]
mod tests {
    use super::*;

    fn postgres_url() -> String {
        std::env::var("SIGNALS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// The blocks a statement touched (`EXPLAIN (ANALYZE, BUFFERS)`, in a transaction rolled
    /// back), with `$n` replaced by `params[n - 1]`.
    async fn blocks(conn: &mut sqlx::PgConnection, sql: &str, params: &[&str]) -> (i64, i64) {
        use sqlx::Connection as _;
        let mut sql = sql.to_owned();
        for (n, value) in params.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", n + 1), value);
        }
        let mut tx = conn.begin().await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}"
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        // The top node's line says its rows; the first `Buffers:` line is the top node's.
        let number_after = |line: &str, key: &str| -> i64 {
            line.split(key).nth(1).map_or(0, |rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
        };
        let rows = number_after(&plan[0], "rows=");
        let buffers = plan
            .iter()
            .find(|line| line.trim_start().starts_with("Buffers:"))
            .map(|line| number_after(line, "hit=") + number_after(line, "read="))
            .unwrap_or(0);
        (buffers, rows)
    }

    /// A connection to the test database with `search_path` on a fresh schema migrated to
    /// [`SCHEMA_VERSION`] (its name returned: drop it before asserting), or `None` when
    /// PostgreSQL is unreachable outside CI.
    async fn migrated_schema(prefix: &str) -> Option<(sqlx::PgConnection, String)> {
        use sqlx::Connection as _;
        let mut conn = match sqlx::PgConnection::connect(&postgres_url()).await {
            Ok(conn) => conn,
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL is required under CI: {error}")
            }
            Err(error) => {
                eprintln!("skipping: PostgreSQL is unreachable ({error})");
                return None;
            }
        };
        let schema = format!("signals_{prefix}_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let mut tx = conn.begin().await.unwrap();
        for (_, steps) in MIGRATIONS {
            for step in *steps {
                let sql = step.sql.replace(" CONCURRENTLY", "");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
        Some((conn, schema))
    }

    async fn drop_schema(conn: &mut sqlx::PgConnection, schema: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(conn)
            .await
            .unwrap();
    }

    async fn run(conn: &mut sqlx::PgConnection, sql: &'static str) {
        sqlx::raw_sql(sql).execute(conn).await.unwrap();
    }

    /// 300,000 due jobs of a handler this worker does not run (an outbox during a broker
    /// outage) and 300,000 higher-priority jobs of its own waiting out a backoff: a claim of
    /// its 10 due jobs, a promotion, a suspect check and the idle check each read a handful of
    /// index and heap pages, not the backlog.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_that_is_not_due_or_not_ours_costs_a_claim_nothing() {
        let Some((mut conn, schema)) = migrated_schema("claim").await else {
            return;
        };
        sqlx::raw_sql(
            "
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at)
SELECT gen_random_uuid(), 's', 'outbox.publish', 'default', 0, '{}', 'available', 25, 0, 0
FROM generate_series(1, 300000);
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 10, '{}', 'scheduled', 25,
       9000000000000, 0
FROM generate_series(1, 300000);
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 0, '{}', 'available', 25, 0, 0
FROM generate_series(1, 10);
ANALYZE signals_jobs;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let mine = r#"'[{"name": "emails.send", "signal": "s"}]'"#;
        let claim = ["NULL", mine, "10", "1", "1", "'host:1'"];
        let (claim_blocks, claimed) = blocks(&mut conn, CLAIM, &claim).await;
        let (suspect_blocks, _) = blocks(&mut conn, CLAIM_SUSPECT, &claim).await;
        let (promote_blocks, _) = blocks(&mut conn, PROMOTE, &["NULL", mine]).await;
        let reserve = ["NULL", mine, "1", "0"];
        let (due_blocks, _) = blocks(&mut conn, RESERVE_SUSPECT, &reserve).await;
        let (busy_blocks, _) = blocks(&mut conn, BUSY, &[mine, "NULL"]).await;
        // Dropped before the assertions, so that a failure leaves no schema behind.
        drop_schema(&mut conn, &schema).await;
        assert_eq!(claimed, 10, "the claim takes the 10 due jobs");
        assert!(claim_blocks < 200, "a claim touched {claim_blocks} blocks");
        assert!(
            suspect_blocks < 50,
            "a suspect claim touched {suspect_blocks} blocks"
        );
        assert!(
            promote_blocks < 50,
            "a promotion touched {promote_blocks} blocks"
        );
        assert!(
            due_blocks < 50,
            "a suspect check touched {due_blocks} blocks"
        );
        assert!(
            busy_blocks < 50,
            "the idle check touched {busy_blocks} blocks"
        );
    }

    /// The running rows of the rescue tests: 20,000 jobs of ten live workers (a busy fleet),
    /// three of worker 99 whose lease lapsed, two a release before workers' leases left with
    /// a lapsed lease of their own (`worker IS NULL`), two of worker 77 that left no row, and
    /// 300,000 done jobs.
    const FLEET: &str = "
INSERT INTO signals_workers (id, lease_until, lease_ms)
SELECT n, 9000000000000, 30000 FROM generate_series(1, 10) AS n;
INSERT INTO signals_workers (id, lease_until, lease_ms) VALUES (99, 0, 30000);
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at, attempt, token, worker)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 0, '{}', 'running', 25, 0, 0, 1, n,
       1 + n % 10
FROM generate_series(1, 20000) AS n;
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at, attempt, token, worker, lease_until)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 0, '{}', 'running', 25, 0, 0, 1, n,
       CASE WHEN n <= 3 THEN 99 WHEN n > 5 THEN 77 END, CASE WHEN n IN (4, 5) THEN 0 END
FROM generate_series(1, 7) AS n;
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at, finished_at, counted)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 0, '{}', 'done', 25, 0, 0, n, true
FROM generate_series(1, 300000) AS n;
ANALYZE signals_jobs; ANALYZE signals_workers;";

    /// Beside 20,000 running jobs of live workers, a rescue reads a handful of blocks (it
    /// starts from the workers whose lease lapsed), and takes exactly the jobs of the lapsed
    /// worker and the lapsed rows without a worker; the lapsed worker is forgotten once its jobs
    /// are gone, the live ones never. A worker that left no row is adopted (a probe per worker
    /// with running jobs), then rescued; a retiring worker whose jobs still run lapses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rescue_beside_a_busy_fleet_reads_only_the_lapsed_workers_jobs() {
        let Some((mut conn, schema)) = migrated_schema("rescue").await else {
            return;
        };
        run(&mut conn, FLEET).await;
        let rescue = ["NULL", "1000", "60000", "'rescued'"];
        // With five jobs to rescue: most of it is writing them (a new version of each row, an
        // entry in each index).
        let (rescue_blocks, _) = blocks(&mut conn, RESCUE, &rescue).await;
        let (adopt_blocks, _) = blocks(&mut conn, ADOPT_WORKERS, &["NULL"]).await;
        let mut rescued = Vec::new();
        let mut workers = Vec::new();
        for adopt in [false, true] {
            if adopt {
                sqlx::query(ADOPT_WORKERS)
                    .bind(None::<i64>)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            let rows = sqlx::query(RESCUE)
                .bind(None::<i64>)
                .bind(1000_i64)
                .bind(60000_i64)
                .bind("rescued")
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected();
            rescued.push(rows);
            sqlx::query(PRUNE_WORKERS)
                .bind(None::<i64>)
                .execute(&mut conn)
                .await
                .unwrap();
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signals_workers")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            workers.push(count);
        }
        // Every tick's case: nothing lapsed.
        let (idle_blocks, _) = blocks(&mut conn, RESCUE, &rescue).await;
        let (prune_blocks, _) = blocks(&mut conn, PRUNE_WORKERS, &["NULL"]).await;
        // Worker 1 retires with its 2,000 jobs running (their outcomes were never recorded),
        // worker 2 once its jobs are done: 1 lapses, 2 is forgotten.
        run(
            &mut conn,
            "UPDATE signals_jobs SET state = 'done' WHERE worker = 2",
        )
        .await;
        for worker in [1_i64, 2] {
            sqlx::query(RETIRE)
                .bind(worker)
                .bind(None::<i64>)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let lapsed: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM signals_workers WHERE id IN (1, 2)
             AND lease_until < (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let retired_rescued = sqlx::query(RESCUE)
            .bind(None::<i64>)
            .bind(1000_i64)
            .bind(60000_i64)
            .bind("rescued")
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
        drop_schema(&mut conn, &schema).await;
        eprintln!(
            "blocks: rescue {rescue_blocks}, idle {idle_blocks}, prune {prune_blocks}, adopt {adopt_blocks}"
        );
        assert_eq!(
            rescued,
            [5, 2],
            "worker 99's three jobs and the two lapsed rows; then worker 77's two, adopted"
        );
        assert_eq!(
            workers,
            [10, 10],
            "lapsed workers are forgotten, live ones kept"
        );
        assert_eq!(lapsed, [1], "a retiring worker with running jobs lapses");
        assert_eq!(retired_rescued, 2000);
        assert!(idle_blocks < 10, "a rescue touched {idle_blocks} blocks");
        assert!(
            rescue_blocks < 150,
            "a rescue of 5 touched {rescue_blocks} blocks"
        );
        assert!(prune_blocks < 50, "a prune touched {prune_blocks} blocks");
        assert!(
            adopt_blocks < 150,
            "an adoption touched {adopt_blocks} blocks"
        );
    }

    /// 300,000 done jobs beside a few in every other state: `stats` reads each state through
    /// its partial index, never the done rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_beside_a_done_backlog_read_only_the_unfinished_jobs() {
        let Some((mut conn, schema)) = migrated_schema("stats").await else {
            return;
        };
        run(
            &mut conn,
            "
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at, finished_at, counted)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 0, '{}', 'done', 25, 0, 0, n, true
FROM generate_series(1, 300000) AS n;
INSERT INTO signals_jobs (event_id, signal, handler, queue, priority, body, state,
                          max_attempts, run_at, created_at, worker)
SELECT gen_random_uuid(), 's', 'emails.send', 'default', 0, '{}',
       (ARRAY['available', 'scheduled', 'pending', 'running', 'dead'])[1 + n % 5], 25, 0,
       1000 + n, CASE WHEN n % 5 = 3 THEN 1 END
FROM generate_series(1, 20) AS n;
ANALYZE signals_jobs;",
        )
        .await;
        let (stats_blocks, _) = blocks(&mut conn, STATS, &[]).await;
        let mut rows: Vec<(String, String, i64, Option<i64>)> =
            sqlx::query_as(STATS).fetch_all(&mut conn).await.unwrap();
        rows.sort();
        drop_schema(&mut conn, &schema).await;
        eprintln!("blocks: stats {stats_blocks}");
        let row = |state: &str, count, oldest| {
            ("emails.send".to_owned(), state.to_owned(), count, oldest)
        };
        assert_eq!(
            rows,
            [
                row("dead", 4, None),
                row("pending", 12, Some(1001)),
                row("running", 4, None)
            ]
        );
        assert!(stats_blocks < 50, "stats touched {stats_blocks} blocks");
    }
}
