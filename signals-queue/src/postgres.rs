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
/// counted).
pub(crate) const SCHEMA_VERSION: i64 = 5;

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
];

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
SELECT $1::uuid, $2, $3, $4, $5, $6, 'available', $7, t.now, t.now
FROM (SELECT ",
    now!("$8"),
    " AS now) AS t"
);

/// The jobs of one `notify` (several queued handlers) in one statement: arrays of handler,
/// queue, priority, payload and max attempts, in run order.
pub(crate) const ENQUEUE_MANY: &str = concat!(
    "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, body, state, max_attempts, run_at, created_at)
SELECT $1::uuid, $2, job.handler, job.queue, job.priority, job.body, 'available',
       job.max_attempts, t.now, t.now
FROM unnest($3::text[], $4::text[], $5::int4[], $6::text[], $7::int4[])
         WITH ORDINALITY AS job (handler, queue, priority, body, max_attempts, n),
     (SELECT ",
    now!("$8"),
    " AS now) AS t
ORDER BY job.n"
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
SET state = 'running', attempt = job.attempt + 1, token = $4, worker = $5, lease_until = NULL
FROM next WHERE job.id = next.id
RETURNING job.id, job.event_id::text, job.handler, COALESCE(job.body, job.payload::text),
          job.attempt, job.priority, job.run_at"
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
SET state = CASE WHEN $1 OR attempt >= max_attempts OR created_at < t.now - $7::BIGINT
                 THEN 'dead' WHEN $3::BIGINT > 0 THEN 'scheduled' ELSE 'available' END,
    finished_at = CASE WHEN $1 OR attempt >= max_attempts OR created_at < t.now - $7::BIGINT
                       THEN t.now ELSE NULL END,
    run_at = t.now + $3::BIGINT, token = NULL, worker = NULL, last_error = $4
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

/// running → scheduled after a backoff (base `$2`, cap `$3` ms), a suspect from now on, or
/// dead when out of attempts, for every job whose worker's lease expired (by the server's
/// clock), and for running rows an older version left without a worker once their own lease
/// expired. Skips locked rows: a row some open transaction is completing is not abandoned.
pub(crate) const RESCUE: &str = concat!(
    "
UPDATE signals_jobs AS job
SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'scheduled' END,
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
WHERE state = 'dead' AND ($2::TEXT IS NULL OR handler = $2)"
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

/// Job counts by handler and state (the three waiting states as `pending`), each read through
/// its state's partial index; done counts from `signals_job_counts`, which the statements
/// that complete and purge jobs keep.
pub(crate) const STATS: &str = "
SELECT handler, 'pending', COUNT(*)::BIGINT, MIN(created_at)::BIGINT FROM signals_jobs
WHERE state IN ('available', 'scheduled', 'pending') GROUP BY handler
UNION ALL
SELECT handler, state, COUNT(*)::BIGINT, NULL FROM signals_jobs
WHERE state IN ('running', 'dead') GROUP BY handler, state
UNION ALL
SELECT handler, 'done', SUM(done)::BIGINT, NULL FROM signals_job_counts
GROUP BY handler HAVING SUM(done) > 0";

/// Up to `$2` dead jobs after the id `$1`, oldest first.
pub(crate) const DEAD_JOBS: &str = "
SELECT id, handler, attempt, last_error, COALESCE(body, payload::text) FROM signals_jobs
WHERE state = 'dead' AND id > $1 ORDER BY id LIMIT $2";

/// 1 while a job of these handlers (`$1`) waits or runs, else 0: an index probe per handler
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
    " ORDER BY run_at LIMIT 1)
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
    run_at = t.now + f.delay, token = NULL, worker = NULL, last_error = f.error
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

    /// 300,000 due jobs of a handler this worker does not run (an outbox during a broker
    /// outage) and 300,000 higher-priority jobs of its own waiting out a backoff: a claim of
    /// its 10 due jobs, a promotion, a suspect check and the idle check each read a handful of
    /// index and heap pages, not the backlog.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_that_is_not_due_or_not_ours_costs_a_claim_nothing() {
        use sqlx::Connection as _;
        let mut conn = match sqlx::PgConnection::connect(&postgres_url()).await {
            Ok(conn) => conn,
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL is required under CI: {error}")
            }
            Err(error) => return eprintln!("skipping: PostgreSQL is unreachable ({error})"),
        };
        let schema = format!("signals_claim_{}", uuid::Uuid::now_v7().simple());
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
        let claim = ["NULL", mine, "10", "1", "1"];
        let (claim_blocks, claimed) = blocks(&mut conn, CLAIM, &claim).await;
        let (suspect_blocks, _) = blocks(&mut conn, CLAIM_SUSPECT, &claim).await;
        let (promote_blocks, _) = blocks(&mut conn, PROMOTE, &["NULL", mine]).await;
        let reserve = ["NULL", mine, "1", "0"];
        let (due_blocks, _) = blocks(&mut conn, RESERVE_SUSPECT, &reserve).await;
        let (busy_blocks, _) = blocks(&mut conn, BUSY, &[mine]).await;
        // Dropped before the assertions, so that a failure leaves no schema behind.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await
            .unwrap();
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
}
