//! The jobs table on SQLite: its schema and statements, shared by the sync path (rusqlite,
//! feature `sqlite`) and the async path (sqlx, feature `sqlx-sqlite`); each is used by one of
//! them or both. Every transition of the [life cycle](crate::lifecycle) is one statement,
//! guarded by the expected state and, from `running`, by the claim's token.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "sqlx-sqlite")),
    allow(dead_code)
)]

/// The newest migration this crate knows and needs: 1 the jobs table, 2 the broker's inbox, 3
/// workers' leases (`signals_workers`, `worker`) and crash counts (`crashes`), 4 the inbox's
/// time index (for pruning) and the done counts (`signals_job_counts`), 5 the mark of the done
/// rows those counts counted (`counted`: a purge takes off only those), 6 the operator's
/// records: each job's attempts (`attempts`, `started_at`), its outcome beside a terminal
/// state (`outcome`: `discarded` or `cancelled` beside `dead`), workers' labels, paused queues
/// (`signals_queues`) and the handlers workers run (`signals_handlers`); it drops the two
/// indexes only the release before 5 claimed through; 7 the fleet's leader (`signals_leader`)
/// and the ticks periodic signals fired (`signals_ticks`); 8 coalescing (`coalesce_key`, the
/// partial unique index `signals_jobs_coalesce` and the triggers that fold a job returning to
/// `pending` into a pending one of the same key, see [`FOLD`]). Migration 4 is an expansion:
/// the level in `signals_queue_schema` (which the release before it reads, refusing anything
/// above 3) stays at [`COMPATIBLE_FROM`], and `signals_queue_migrations` records 4 to 8.
pub(crate) const SCHEMA_VERSION: i64 = 8;

/// The compatibility level a migrated file records in `signals_queue_schema`: the oldest
/// schema whose code still works against it.
pub(crate) const COMPATIBLE_FROM: i64 = 3;

/// Whether the migrations table exists: before migration 4 it did not (the newest migration
/// is then the level).
pub(crate) const HAS_MIGRATIONS: &str = "SELECT COUNT(*) > 0 FROM sqlite_master
WHERE type = 'table' AND name = 'signals_queue_migrations'";

/// The newest migration that ran.
pub(crate) const APPLIED: &str = "SELECT MAX(version) FROM signals_queue_migrations";

/// Records that the migrations up to [`SCHEMA_VERSION`] ran; first marks the jobs already dead
/// as announced (migration 7), so that the first leader does not announce every death of the
/// last fourteen days.
pub(crate) const MIGRATED: &str = "
CREATE TABLE IF NOT EXISTS signals_queue_migrations (version INTEGER PRIMARY KEY);
UPDATE signals_jobs SET announced_at = finished_at
WHERE state = 'dead' AND announced_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM signals_queue_migrations WHERE version = 7);
INSERT OR IGNORE INTO signals_queue_migrations (version) VALUES (4), (5), (6), (7), (8)";

/// Judges a file's schema from its level (`signals_queue_schema`) and its newest migration
/// (`signals_queue_migrations`; `None` before migration 4): `true` if this release works with
/// it as it is, `false` if it needs the migration; an error if a newer release wrote a level
/// this one cannot work with.
pub(crate) fn is_current(
    level: Option<i64>,
    applied: Option<i64>,
) -> Result<bool, crate::error::Error> {
    match level {
        Some(found) if found > SCHEMA_VERSION => Err(crate::error::Error::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        }),
        _ => Ok(applied
            .or(level)
            .is_some_and(|applied| applied >= SCHEMA_VERSION)),
    }
}

/// What [`is_current`] refuses: the migration a file has had, and the one this release needs.
pub(crate) fn outdated(level: Option<i64>, applied: Option<i64>) -> crate::error::Error {
    crate::error::Error::SchemaOutdated {
        found: applied.or(level),
        needed: SCHEMA_VERSION,
    }
}

/// The tables, in their newest shape when created now; an older table gets the columns of
/// [`ADDED_COLUMNS`] before [`INDEXES`] run.
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
    finished_at  INTEGER,
    worker       INTEGER,
    crashes      INTEGER NOT NULL DEFAULT 0,
    counted      INTEGER NOT NULL DEFAULT 0,
    outcome      TEXT,
    attempts     TEXT,
    started_at   INTEGER,
    claimed_by   TEXT,
    announced_at INTEGER,
    coalesce_key TEXT
);
CREATE TABLE IF NOT EXISTS signals_workers (
    id           INTEGER PRIMARY KEY,
    lease_until  INTEGER NOT NULL,
    lease_ms     INTEGER NOT NULL,
    beats        INTEGER NOT NULL DEFAULT 0,
    label        TEXT
);
CREATE TABLE IF NOT EXISTS signals_queues (
    name        TEXT    PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signals_handlers (
    name          TEXT    PRIMARY KEY,
    signal        TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    max_attempts  INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    seen_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signals_leader (
    name        TEXT    PRIMARY KEY,
    worker      INTEGER NOT NULL,
    elected_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signals_ticks (
    signal    TEXT    NOT NULL,
    tick_at   INTEGER NOT NULL,
    fired_at  INTEGER NOT NULL,
    worker    INTEGER,
    PRIMARY KEY (signal, tick_at)
);
CREATE TABLE IF NOT EXISTS signals_job_counts (
    handler TEXT    NOT NULL,
    shard   INTEGER NOT NULL,
    done    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (handler, shard)
);
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

/// The columns schemas 3, 5, 6, 7 and 8 added to older tables: (table, column, `ALTER TABLE`
/// statement), run when `pragma_table_info` lacks the column.
pub(crate) const ADDED_COLUMNS: [(&str, &str, &str); 10] = [
    (
        "signals_jobs",
        "worker",
        "ALTER TABLE signals_jobs ADD COLUMN worker INTEGER",
    ),
    (
        "signals_jobs",
        "crashes",
        "ALTER TABLE signals_jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "signals_jobs",
        "counted",
        "ALTER TABLE signals_jobs ADD COLUMN counted INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "signals_jobs",
        "outcome",
        "ALTER TABLE signals_jobs ADD COLUMN outcome TEXT",
    ),
    (
        "signals_jobs",
        "attempts",
        "ALTER TABLE signals_jobs ADD COLUMN attempts TEXT",
    ),
    (
        "signals_jobs",
        "started_at",
        "ALTER TABLE signals_jobs ADD COLUMN started_at INTEGER",
    ),
    (
        "signals_jobs",
        "claimed_by",
        "ALTER TABLE signals_jobs ADD COLUMN claimed_by TEXT",
    ),
    (
        "signals_workers",
        "label",
        "ALTER TABLE signals_workers ADD COLUMN label TEXT",
    ),
    (
        "signals_jobs",
        "announced_at",
        "ALTER TABLE signals_jobs ADD COLUMN announced_at INTEGER",
    ),
    (
        "signals_jobs",
        "coalesce_key",
        "ALTER TABLE signals_jobs ADD COLUMN coalesce_key TEXT",
    ),
];

/// Whether the table `?1` has the column `?2`.
pub(crate) const HAS_COLUMN: &str = "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2";

/// The indexes, once every column exists. Migration 5 added `signals_jobs_claim` (pending jobs
/// by handler, in claim order: claims, idle checks and `stats` probe it per handler),
/// `signals_jobs_suspects` (due suspects by handler) and `signals_jobs_dead` (the dead-job
/// listing, `stats`); migration 6 drops `signals_jobs_pending` and `signals_jobs_suspect`,
/// which only the release before 5 claimed through (every write kept them up to date).
pub(crate) const INDEXES: &str = "
DROP INDEX IF EXISTS signals_jobs_pending;
DROP INDEX IF EXISTS signals_jobs_suspect;
CREATE INDEX IF NOT EXISTS signals_jobs_claim
    ON signals_jobs (handler, priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS signals_jobs_suspects
    ON signals_jobs (handler, run_at) WHERE state = 'pending' AND crashes > 0;
CREATE INDEX IF NOT EXISTS signals_jobs_dead ON signals_jobs (id) WHERE state = 'dead';
DROP INDEX IF EXISTS signals_jobs_running;
CREATE INDEX IF NOT EXISTS signals_jobs_worker
    ON signals_jobs (worker) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS signals_jobs_done
    ON signals_jobs (finished_at) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS signals_inbox_received ON signals_inbox (received_at);
CREATE INDEX IF NOT EXISTS signals_jobs_unannounced ON signals_jobs (id)
    WHERE state = 'dead' AND outcome IS NULL AND announced_at IS NOT finished_at;
CREATE UNIQUE INDEX IF NOT EXISTS signals_jobs_coalesce ON signals_jobs (handler, coalesce_key)
    WHERE coalesce_key IS NOT NULL AND state = 'pending';
";

/// Coalescing's one rule for every statement that moves a job back to `pending` (a failure's
/// retry, a snooze, a rescue, a job given back, an operator's retry, and the previous release's
/// statements during a rolling deploy): when a pending job of the same handler and key exists,
/// the returning job folds into it: it ends `dead` with the outcome `cancelled`, its attempts
/// kept, and the pending one runs in its place (one job runs, with the latest payload and its
/// full attempts). SQLite's triggers cannot change the row being written, so the pending job
/// steps out of `signals_jobs_coalesce` for the statement (its key set to a mark that names the
/// returning job), and the row's own trigger, after it, ends the returning job and gives the
/// key back.
pub(crate) const FOLD: &str = "
CREATE TRIGGER IF NOT EXISTS signals_jobs_fold BEFORE UPDATE OF state ON signals_jobs
WHEN NEW.coalesce_key IS NOT NULL AND NEW.state = 'pending' AND OLD.state <> 'pending'
BEGIN
    UPDATE signals_jobs SET coalesce_key = char(0) || NEW.id
    WHERE handler = NEW.handler AND coalesce_key = NEW.coalesce_key AND state = 'pending'
      AND id <> NEW.id;
END;
CREATE TRIGGER IF NOT EXISTS signals_jobs_folded AFTER UPDATE OF state ON signals_jobs
WHEN NEW.coalesce_key IS NOT NULL AND NEW.state = 'pending' AND OLD.state <> 'pending'
BEGIN
    UPDATE signals_jobs
    SET state = 'dead', outcome = 'cancelled', token = NULL, worker = NULL, lease_until = NULL,
        finished_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        last_error = 'coalesced: job ' || (SELECT w.id FROM signals_jobs AS w
                                           WHERE w.handler = NEW.handler
                                             AND w.coalesce_key = char(0) || NEW.id)
                     || ' of the same key was waiting, and runs in its place'
    WHERE id = NEW.id
      AND EXISTS (SELECT 1 FROM signals_jobs AS w
                  WHERE w.handler = NEW.handler AND w.coalesce_key = char(0) || NEW.id);
    UPDATE signals_jobs SET coalesce_key = NEW.coalesce_key
    WHERE handler = NEW.handler AND coalesce_key = char(0) || NEW.id;
END;
";

/// `notify` writes one row per queued handler, in the caller's transaction. `run_at` 0: due at
/// once, whatever any process's clock says (processes on one SQLite file may disagree);
/// `created_at` is the writer's clock, for `stats` only.
pub(crate) const ENQUEUE: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, CASE WHEN ?9 > 0 THEN ?8 + ?9 ELSE 0 END, ?8)";

/// The jobs of one `notify` (several queued handlers) in one statement: `?3` is a JSON array
/// of `[handler, queue, priority, payload, max_attempts, delay_ms, coalesce_key]`, in run
/// order. A delayed job is due at the writer's clock plus its delay (SQLite has no clock of its
/// own).
pub(crate) const ENQUEUE_MANY: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at)
SELECT ?1, ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
       json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),
       CASE WHEN json_extract(value, '$[5]') > 0 THEN ?4 + json_extract(value, '$[5]') ELSE 0 END,
       ?4
FROM json_each(?3) ORDER BY key";

/// The jobs of a `notify` of which one at least has a coalescing key, as [`ENQUEUE_MANY`]
/// takes them. A key that a pending job of the handler holds already writes nothing
/// (`signals_jobs_coalesce`; SQLite has one writer at a time). The statements without keys do
/// not name the column, so that a program of this release notifies against a file it has not
/// migrated yet, as long as none of its handlers coalesces.
pub(crate) const ENQUEUE_COALESCING: &str = "
INSERT INTO signals_jobs
    (event_id, signal, handler, queue, priority, payload, max_attempts, run_at, created_at,
     coalesce_key)
SELECT ?1, ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
       json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),
       CASE WHEN json_extract(value, '$[5]') > 0 THEN ?4 + json_extract(value, '$[5]') ELSE 0 END,
       ?4, json_extract(value, '$[6]')
FROM json_each(?3) WHERE true ORDER BY key
ON CONFLICT DO NOTHING";

/// Whether a row is one of the jobs `$handlers` (a JSON array of `{"name", "signal"}`) names:
/// its handler's name, and its signal's type name (the row stores the full path; a module may
/// move).
macro_rules! mine {
    ($handlers:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM json_each(",
            $handlers,
            ") AS h
                  WHERE handler = json_extract(h.value, '$.name')
                    AND (signal = json_extract(h.value, '$.signal')
                         OR substr(signal, -length(json_extract(h.value, '$.signal')) - 2)
                            = '::' || json_extract(h.value, '$.signal')))"
        )
    };
}

/// Whether a row is a job of the handler `$h` (a row of `json_each` over the handlers: a
/// `{"name", "signal"}` object): its handler's name, and its signal's type name (the row stores
/// the full path; a module may move). `handler = …` comes first: the indexes that start at the
/// handler are probed with it.
macro_rules! of_handler {
    ($h:literal) => {
        concat!(
            "handler = json_extract(",
            $h,
            ".value, '$.name')
          AND (signal = json_extract(",
            $h,
            ".value, '$.signal')
               OR substr(signal, -length(json_extract(",
            $h,
            ".value, '$.signal')) - 2)
                  = '::' || json_extract(",
            $h,
            ".value, '$.signal'))"
        )
    };
}

/// The claim of [`CLAIM`] and [`CLAIM_SUSPECT`]: for each handler of `?2` (the outer loop: a
/// `CROSS JOIN` keeps `json_each` outside), its first `?4` candidates by `$order` through the
/// index that starts at the handler (`$filter` picks suspects or not), then the first `?4` of
/// them all in claim order.
macro_rules! claim {
    ($filter:literal, $order:literal) => {
        concat!(
            "
UPDATE signals_jobs
SET state = 'running', attempt = attempt + 1, token = ?5, worker = ?6, lease_until = NULL,
    started_at = ?1, claimed_by = ?7
WHERE id IN (
    SELECT job.id FROM json_each(?2) AS h CROSS JOIN signals_jobs AS job
    WHERE job.id IN (
        SELECT id FROM signals_jobs
        WHERE state = 'pending' AND ",
            of_handler!("h"),
            "
          AND run_at <= ?1 AND ",
            $filter,
            "
        ORDER BY ",
            $order,
            "
        LIMIT +?4)
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT +?4)
RETURNING id, event_id, handler, payload, attempt, priority, run_at, created_at"
        )
    };
}

/// pending → running for up to `?4` due jobs of the handlers `?2` (a JSON array of
/// `{"name", "signal"}`: a row of another signal under the same name is not taken), in claim
/// order: one statement, so two workers never claim one job. Charges the attempt: the handler
/// starts now. Each handler's candidates come from `signals_jobs_claim` starting at that
/// handler, so jobs of handlers this worker does not run (another service's backlog in the
/// same file) are never read. Takes no suspect; `?3` (suspects wanted) is false. (`LIMIT +?4`:
/// with a bare parameter there, SQLite re-prepares the statement at every run.)
pub(crate) const CLAIM: &str = claim!("crashes = 0 AND NOT ?3", "priority DESC, run_at, id");

/// [`CLAIM`] for suspects (`?3` true), each handler's through `signals_jobs_suspects`: those
/// the claimer (`?6`) reserved ([`RESERVE_SUSPECT`]), or no one did.
pub(crate) const CLAIM_SUSPECT: &str = claim!(
    "crashes > 0 AND ?3 AND (worker IS NULL OR worker = ?6)",
    "run_at"
);

/// The due jobs of these publishing functions (`?1`) at `?2`: how many, and the oldest's due
/// time (the outbox a relay should be emptying). Probes `signals_jobs_claim` per function.
pub(crate) const OUTBOX_BACKLOG: &str = concat!(
    "
SELECT COUNT(*), MIN(MAX(run_at, created_at)) FROM json_each(?1) AS h CROSS JOIN signals_jobs
WHERE state = 'pending' AND ",
    of_handler!("h"),
    " AND run_at <= ?2"
);

/// Whether any job of these handlers (`?2`) is runnable: a read, which in WAL mode never waits
/// for a writer (an idle worker asks before it claims, so that it does not queue behind the
/// commit of the job it was woken for). Probes `signals_jobs_claim` per handler.
pub(crate) const RUNNABLE: &str = concat!(
    "
SELECT EXISTS (
    SELECT 1 FROM json_each(?2) AS h CROSS JOIN signals_jobs
    WHERE state = 'pending' AND ",
    of_handler!("h"),
    " AND run_at <= ?1)"
);

/// running → pending again for the jobs of the claim `?1`, whose reply was lost: the attempt
/// it charged is given back (no handler ran).
pub(crate) const UNCLAIM: &str = "
UPDATE signals_jobs
SET state = 'pending', attempt = MAX(attempt - 1, 0), token = NULL, worker = NULL
WHERE token = ?1 AND state = 'running'";

/// running → pending again for the `(id, token)` pairs of `?1` (a JSON array): jobs fetched
/// ahead that a shutdown gives back before they started; their attempts are uncharged.
pub(crate) const GIVE_BACK: &str = "
UPDATE signals_jobs SET state = 'pending', attempt = MAX(attempt - 1, 0), token = NULL, worker = NULL
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token
      FROM json_each(?1)) AS back
WHERE signals_jobs.id = back.id AND signals_jobs.token = back.token
  AND signals_jobs.state = 'running'";

/// `attempts` with the attempt that ends now (`$now`) appended: when it started (the claim's
/// `started_at`), how long it ran, the worker that ran it (`claimed_by`: `host:pid`), and
/// `$error`. Written by the statement that records a failure, a snooze, a discard or a rescue:
/// the history costs no statement of its own. A successful attempt is not appended (the
/// batched completion does no JSON work per job): it is the row's own `started_at`,
/// `finished_at` and `claimed_by`, which the reader adds last.
macro_rules! append_attempt {
    ($now:literal, $error:literal) => {
        concat!(
            "json_insert(COALESCE(attempts, '[]'), '$[#]', json_object(
        'started_at', started_at, 'duration_ms', ",
            $now,
            " - started_at, 'worker', claimed_by, 'error', ",
            $error,
            "))"
        )
    };
}

/// running → done, in the job's own transaction, only while its claim holds it.
pub(crate) const COMPLETE: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = ?1, worker = NULL, counted = 1
WHERE id = ?2 AND token = ?3 AND state = 'running'";

/// running → done for the `[id, token]` pairs of `?2`: the completer's flush.
pub(crate) const COMPLETE_MANY: &str = "
UPDATE signals_jobs SET state = 'done', finished_at = ?1, worker = NULL, counted = 1
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token
      FROM json_each(?2)) AS done
WHERE signals_jobs.id = done.id AND signals_jobs.token = done.token
  AND signals_jobs.state = 'running'
RETURNING handler";

/// running → pending after `?3` ms, or dead (no attempts left, `?1`: cannot run, or written
/// more than `?7` ms ago by the writer's clock); or, as the handler's error asked (`?8`), a
/// snooze (pending after `?3` ms, the attempt given back) or a discard (dead, `discarded`).
pub(crate) const FAIL: &str = concat!(
    "
UPDATE signals_jobs
SET state = CASE WHEN ?8 = 'discard' THEN 'dead' WHEN ?8 = 'snooze' THEN 'pending'
                 WHEN ?1 OR attempt >= max_attempts OR created_at < ?2 - ?7
                 THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN ?8 = 'discard' OR (?8 = 'fail' AND (
                           ?1 OR attempt >= max_attempts OR created_at < ?2 - ?7))
                       THEN ?2 ELSE NULL END,
    outcome = CASE WHEN ?8 = 'discard' THEN 'discarded' ELSE outcome END,
    attempt = CASE WHEN ?8 = 'snooze' THEN MAX(attempt - 1, 0) ELSE attempt END,
    run_at = ?2 + ?3, token = NULL, worker = NULL, last_error = ?4,
    attempts = ",
    append_attempt!("?2", "?4"),
    "
WHERE id = ?5 AND token = ?6 AND state = 'running'"
);

/// The jobs running under worker `?1` (id, token, attempt), through the index of running jobs
/// by worker: maintenance looks for rows nothing of the worker holds any more.
pub(crate) const RUNNING_OF: &str =
    "SELECT id, token, attempt FROM signals_jobs WHERE state = 'running' AND worker = ?1";

/// Renews the lease of worker `?1` (`?3` ms, labelled `?4`: host and process): one row, and
/// its counter moves.
pub(crate) const HEARTBEAT: &str = "
INSERT INTO signals_workers (id, lease_until, lease_ms, beats, label)
VALUES (?1, ?2 + ?3, ?3, 1, ?4)
ON CONFLICT (id) DO UPDATE
SET lease_until = excluded.lease_until, lease_ms = excluded.lease_ms, beats = beats + 1";

/// Forgets a worker that stopped.
pub(crate) const RETIRE: &str = "DELETE FROM signals_workers WHERE id = ?1";

/// The workers' counters, for a [`StaleWatch`](crate::lifecycle::StaleWatch).
pub(crate) const WORKERS: &str = "SELECT id, beats, lease_ms FROM signals_workers";

/// running → pending after a backoff (base `?2`, cap `?3` ms), a suspect from now on, or dead
/// when out of attempts, for the jobs of the stale workers `?5` (a JSON array), of workers that
/// left no row, and running rows an older version left without a worker once their own lease
/// expired.
pub(crate) const RESCUE: &str = concat!(
    "
UPDATE signals_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END,
    run_at = ?1 + CAST(MIN(?3, ?2 * (1 << MIN(MAX(attempt - 1, 0), 30)))
                       * ((RANDOM() & 1048575) / 1048576.0) AS INTEGER),
    token = NULL, worker = NULL, crashes = crashes + 1, last_error = ?4,
    attempts = ",
    append_attempt!("?1", "?4"),
    "
WHERE state = 'running' AND (
    worker IN (SELECT value FROM json_each(?5))
    OR (worker IS NULL AND lease_until < ?1)
    OR (worker IS NOT NULL AND worker NOT IN (SELECT id FROM signals_workers)))"
);

/// Forgets the stale workers `?1` (a JSON array) once their jobs were rescued.
pub(crate) const PRUNE_WORKERS: &str =
    "DELETE FROM signals_workers WHERE id IN (SELECT value FROM json_each(?1))";

/// Reserves for worker `?3` a due suspect of these handlers (`?2`), which it will run alone:
/// the oldest one no live worker reserved (its `worker`, while `pending`), due for at least
/// `?4` ms (0 for an idle worker, a lease for a busy one). One worker drains for a suspect, not
/// every worker that runs its handler. Probes `signals_jobs_suspects` per handler. One row
/// changed if the worker holds one.
pub(crate) const RESERVE_SUSPECT: &str = concat!(
    "
UPDATE signals_jobs SET worker = ?3
WHERE id = (
    SELECT job.id FROM json_each(?2) AS h CROSS JOIN signals_jobs AS job
    WHERE job.id IN (
        SELECT id FROM signals_jobs
        WHERE state = 'pending' AND crashes > 0 AND ",
    of_handler!("h"),
    "
          AND run_at <= ?1 - ?4
          AND (worker IS NULL OR worker = ?3 OR worker NOT IN (SELECT id FROM signals_workers))
        ORDER BY run_at LIMIT 1)
    ORDER BY job.run_at LIMIT 1)"
);

/// dead → pending, with the attempts and crashes reset; of the handler `?2` only, unless NULL.
/// A discarded or cancelled job stays as it is.
pub(crate) const RETRY_DEAD: &str = "
UPDATE signals_jobs
SET state = 'pending', attempt = 0, crashes = 0, run_at = ?1, finished_at = NULL
WHERE state = 'dead' AND outcome IS NULL AND (?2 IS NULL OR handler = ?2)";

/// Deletes up to [`PURGE_BATCH`] done jobs that finished before `?1` (the caller repeats while
/// a statement deletes that many, and takes those the done counts counted off them with
/// [`COUNT_DONE`]): no write transaction holds every writer for long. Each deleted row's
/// handler if it was counted, else `NULL`.
pub(crate) const PURGE_DONE: &str = "
DELETE FROM signals_jobs WHERE id IN (
    SELECT id FROM signals_jobs WHERE state = 'done' AND finished_at < ?1 LIMIT 10000)
RETURNING CASE WHEN counted THEN handler END";

/// Adds completed jobs to the done counts, in the transaction that completed them (shard 0),
/// or takes purged ones off (negative counts, shard -1): `?1` is a JSON object of handler to
/// count.
pub(crate) const COUNT_DONE: &str = "
INSERT INTO signals_job_counts (handler, shard, done)
SELECT key, ?2, value FROM json_each(?1) WHERE true
ON CONFLICT (handler, shard) DO UPDATE SET done = done + excluded.done";

/// Counts one completed job of `?1`, in its own transaction.
pub(crate) const COUNT_ONE: &str = "
INSERT INTO signals_job_counts (handler, shard, done) VALUES (?1, 0, 1)
ON CONFLICT (handler, shard) DO UPDATE SET done = done + 1";

/// How many rows one [`PURGE_DONE`] deletes at most.
pub(crate) const PURGE_BATCH: u64 = 10_000;

/// The version of the schema, `NULL` before the first migration.
pub(crate) const VERSION: &str = "SELECT MAX(version) FROM signals_queue_schema";

/// Whether the schema table exists: before the first migration it does not.
pub(crate) const HAS_SCHEMA: &str =
    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'signals_queue_schema'";

/// Records the schema version.
pub(crate) const SET_VERSION: &str = "INSERT INTO signals_queue_schema (version) VALUES (?1)";

/// Job counts by handler and state, with the oldest job's creation time of each group, one
/// part per state, each through its partial index (a filter on several states matches none, and
/// scanned the table): pending through `signals_jobs_claim` (in handler order), running through
/// `signals_jobs_worker`, dead through `signals_jobs_dead`. Done counts from
/// `signals_job_counts`, which the statements that complete and purge jobs keep.
pub(crate) const STATS: &str = "
SELECT handler, 'pending', COUNT(*), MIN(created_at) FROM signals_jobs
WHERE state = 'pending' GROUP BY handler
UNION ALL
SELECT handler, 'running', COUNT(*), MIN(created_at) FROM signals_jobs
WHERE state = 'running' GROUP BY handler
UNION ALL
SELECT handler, 'dead', COUNT(*), MIN(created_at) FROM signals_jobs
WHERE state = 'dead' AND outcome IS NULL GROUP BY handler
UNION ALL
SELECT handler, 'done', SUM(done), NULL FROM signals_job_counts
GROUP BY handler HAVING SUM(done) > 0";

/// The waiting jobs of the signal `?1` (its full path), oldest first: (id, handler, queue,
/// payload, event id). The test kit's read; a scan.
#[cfg(feature = "testing")]
pub(crate) const WAITING_OF_SIGNAL: &str = "
SELECT id, handler, queue, payload, event_id FROM signals_jobs
WHERE signal = ?1 AND state = 'pending' ORDER BY id";

/// Up to `?2` dead jobs after the id `?1`, oldest first: a range of `signals_jobs_dead` (a
/// range of rowids would walk every done job in between).
pub(crate) const DEAD_JOBS: &str = "
SELECT id, handler, attempt, last_error, payload FROM signals_jobs
WHERE state = 'dead' AND outcome IS NULL AND id > ?1 ORDER BY id LIMIT ?2";

/// 1 while a job of these handlers (`?1`) is due, waits out a retry (or a snooze), or runs,
/// else 0: a job not yet due for its first attempt (a `delay`) does not keep a worker busy.
/// A probe of `signals_jobs_claim` per handler, then the running jobs (through
/// `signals_jobs_worker`: at most every worker's concurrency).
pub(crate) const BUSY: &str = concat!(
    "
SELECT EXISTS (
    SELECT 1 FROM json_each(?1) AS h CROSS JOIN signals_jobs
    WHERE state = 'pending' AND ",
    of_handler!("h"),
    "
      AND (run_at <= ?2 OR attempt > 0 OR attempts IS NOT NULL))
    OR EXISTS (SELECT 1 FROM signals_jobs WHERE state = 'running' AND ",
    mine!("?1"),
    ")"
);

/// running → pending after each job's own backoff, or dead (no attempts left, or written more
/// than `?3` ms ago by the writer's clock), for the `[id, token, delay ms, error]` items of
/// `?2` still held by those claims: a batch's failures in one statement. How many rows changed.
pub(crate) const FAIL_MANY: &str = "
UPDATE signals_jobs
SET state = CASE WHEN attempt >= max_attempts OR created_at < ?1 - ?3
                 THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN attempt >= max_attempts OR created_at < ?1 - ?3
                       THEN ?1 ELSE NULL END,
    run_at = ?1 + f.delay, token = NULL, worker = NULL, last_error = f.error,
    attempts = json_insert(COALESCE(attempts, '[]'), '$[#]', json_object(
        'started_at', started_at, 'duration_ms', ?1 - started_at,
        'worker', claimed_by, 'error', f.error))
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token,
             json_extract(value, '$[2]') AS delay, json_extract(value, '$[3]') AS error
      FROM json_each(?2)) AS f
WHERE signals_jobs.id = f.id AND signals_jobs.token = f.token
  AND signals_jobs.state = 'running'";
