//! The operator's statements on PostgreSQL, the twins of [`sqlite_ops`](crate::sqlite_ops)
//! (same parameters, same words). `$1` is the time words are judged at: `NULL` lets the
//! server's clock decide, so no two machines' clocks are compared.
//!
//! The stored states map to the words so: `available` and the previous releases' `pending`
//! are `pending` (so is a `scheduled` row whose time has come but is not promoted yet);
//! `scheduled` is `scheduled` until due; `dead` with an `outcome` is that outcome.

/// The time words are judged at: `$1`, else the server's clock.
macro_rules! at {
    () => {
        "COALESCE($1::BIGINT, (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT)"
    };
}

/// The word of a row.
macro_rules! word {
    () => {
        concat!(
            "CASE WHEN state = 'available' THEN 'pending'
     WHEN state IN ('scheduled', 'pending') AND run_at <= ",
            at!(),
            " THEN 'pending'
     WHEN state IN ('scheduled', 'pending') THEN 'scheduled'
     WHEN state = 'dead' AND outcome IS NOT NULL THEN outcome
     ELSE state END"
        )
    };
}

/// The rows a listing or an action looks at: ids after `$2` (a cursor), among the ids of the
/// JSON array `$3` if not `NULL`, of the handler `$4` and queue `$5` if not `NULL`, in the word
/// `$6` if not `NULL`.
macro_rules! filtered {
    () => {
        concat!(
            "id > $2
  AND ($3::jsonb IS NULL OR id IN (SELECT value::BIGINT FROM jsonb_array_elements_text($3::jsonb)))
  AND ($4::TEXT IS NULL OR handler = $4) AND ($5::TEXT IS NULL OR queue = $5)
  AND ($6::TEXT IS NULL OR ",
            word!(),
            " = $6)"
        )
    };
}

/// The columns of a listed job (see `sqlite_ops`).
macro_rules! listed {
    () => {
        concat!(
            "id, handler, queue, ",
            word!(),
            ", attempt, max_attempts, GREATEST(run_at, created_at), last_error"
        )
    };
}

/// Up to `$7` jobs of the filter, by id.
pub(crate) const JOBS: &str = concat!(
    "SELECT ",
    listed!(),
    " FROM signals_jobs WHERE ",
    filtered!(),
    " ORDER BY id LIMIT $7"
);

/// One job (`$2`): the listed columns, its payload and its attempts.
pub(crate) const JOB: &str = concat!(
    "SELECT ",
    listed!(),
    ", COALESCE(body, payload::text), attempts::text, started_at, finished_at, claimed_by
FROM signals_jobs WHERE id = $2"
);

/// What an action may change (see `sqlite_ops`).
macro_rules! applicable {
    (retry) => {
        concat!(
            "(state = 'dead' OR (state IN ('scheduled', 'pending') AND run_at > ",
            at!(),
            "))"
        )
    };
    (discard) => {
        "(state IN ('available', 'scheduled', 'pending') OR (state = 'dead' AND outcome IS NULL))"
    };
    (cancel) => {
        "state IN ('available', 'scheduled', 'pending', 'running')"
    };
}

/// The ids an action changes in one chunk, locked (a worker's claim skips them meanwhile).
macro_rules! chunk {
    ($action:tt) => {
        concat!(
            "SELECT id FROM signals_jobs WHERE ",
            filtered!(),
            " AND ",
            applicable!($action),
            " ORDER BY id LIMIT $7"
        )
    };
}

/// How many jobs of one chunk an action would change (`--dry-run`).
pub(crate) const RETRY_CHUNK: &str = chunk!(retry);
/// See [`RETRY_CHUNK`].
pub(crate) const DISCARD_CHUNK: &str = chunk!(discard);
/// See [`RETRY_CHUNK`].
pub(crate) const CANCEL_CHUNK: &str = chunk!(cancel);

/// Retries one chunk; the ids it changed.
pub(crate) const RETRY: &str = concat!(
    "
UPDATE signals_jobs
SET run_at = ",
    at!(),
    ", finished_at = NULL, outcome = NULL,
    attempt = CASE WHEN state = 'dead' THEN 0 ELSE attempt END,
    crashes = CASE WHEN state = 'dead' THEN 0 ELSE crashes END,
    state = 'available'
WHERE id IN (",
    chunk!(retry),
    " FOR UPDATE SKIP LOCKED)
RETURNING id"
);

/// Discards one chunk; the ids it changed.
pub(crate) const DISCARD: &str = concat!(
    "
UPDATE signals_jobs
SET state = 'dead', outcome = 'discarded', finished_at = ",
    at!(),
    ", token = NULL, worker = NULL,
    last_error = COALESCE(last_error, 'discarded by an operator')
WHERE id IN (",
    chunk!(discard),
    " FOR UPDATE SKIP LOCKED)
RETURNING id"
);

/// Cancels one chunk; the ids it changed, and tells the workers at commit (a running job's
/// worker drops it).
pub(crate) const CANCEL: &str = concat!(
    "
WITH cancelled AS (
    UPDATE signals_jobs
    SET state = 'dead', outcome = 'cancelled', finished_at = ",
    at!(),
    ", token = NULL, worker = NULL
    WHERE id IN (",
    chunk!(cancel),
    " FOR UPDATE)
    RETURNING id)
SELECT id FROM cancelled"
);

/// The jobs by queue, handler and word, with the oldest due job's due time per group, one part
/// per partial index (see `sqlite_ops`).
pub(crate) const OVERVIEW: &str = concat!(
    "
SELECT queue, handler, 'pending', COUNT(*)::BIGINT,
       MIN(GREATEST(run_at, created_at))::BIGINT
FROM signals_jobs WHERE state = 'available' GROUP BY 1, 2
UNION ALL
SELECT queue, handler,
       CASE WHEN run_at <= ",
    at!(),
    " THEN 'pending' ELSE 'scheduled' END, COUNT(*)::BIGINT,
       MIN(CASE WHEN run_at <= ",
    at!(),
    " THEN GREATEST(run_at, created_at) END)::BIGINT
FROM signals_jobs WHERE state IN ('scheduled', 'pending') GROUP BY 1, 2, 3
UNION ALL
SELECT queue, handler, 'running', COUNT(*)::BIGINT, NULL FROM signals_jobs
WHERE state = 'running' GROUP BY 1, 2
UNION ALL
SELECT queue, handler, COALESCE(outcome, 'dead'), COUNT(*)::BIGINT, NULL FROM signals_jobs
WHERE state = 'dead' GROUP BY 1, 2, 3
UNION ALL
SELECT COALESCE(
           (SELECT queue FROM signals_handlers AS h WHERE h.name = c.handler),
           (SELECT queue FROM signals_jobs AS j WHERE j.handler = c.handler LIMIT 1),
           'default'),
       c.handler, 'done', SUM(c.done)::BIGINT, NULL
FROM signals_job_counts AS c GROUP BY c.handler HAVING SUM(c.done) > 0"
);

/// The queues an operator paused or resumed: (name, paused).
pub(crate) const QUEUES: &str = "SELECT name, paused FROM signals_queues";

/// Pauses (`$2` true) or resumes the queue `$1` (`$3` unused: the server's clock).
pub(crate) const SET_PAUSED: &str = "
INSERT INTO signals_queues (name, paused, updated_at)
VALUES ($1, $2, COALESCE($3::BIGINT, (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT))
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = EXCLUDED.updated_at";

/// Records a handler a worker runs (see `sqlite_ops`).
pub(crate) const RECORD_HANDLER: &str = "
INSERT INTO signals_handlers (name, signal, queue, max_attempts, kind, seen_at)
VALUES ($1, $2, $3, $4, $5,
        COALESCE($6::BIGINT, (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT))
ON CONFLICT (name) DO UPDATE SET signal = EXCLUDED.signal, queue = EXCLUDED.queue,
    max_attempts = EXCLUDED.max_attempts, kind = EXCLUDED.kind, seen_at = EXCLUDED.seen_at";

/// Of the ids `$1` (a JSON array: jobs a worker runs), those an operator cancelled.
pub(crate) const CANCELLED_OF: &str = "
SELECT id FROM signals_jobs
WHERE id IN (SELECT value::BIGINT FROM jsonb_array_elements_text($1::jsonb))
  AND state = 'dead' AND outcome = 'cancelled'";

/// Deletes up to 10,000 dead, discarded and cancelled jobs that finished before `$1`, through
/// `signals_jobs_dead`; how many.
pub(crate) const PURGE_FINISHED: &str = "
WITH gone AS (
    DELETE FROM signals_jobs WHERE id IN (
        SELECT id FROM signals_jobs WHERE state = 'dead' AND finished_at < $1 LIMIT 10000)
    RETURNING 1)
SELECT COUNT(*)::BIGINT FROM gone";

/// The time `$n` or, when `NULL`, the server's clock, in milliseconds.
macro_rules! clock {
    ($param:literal) => {
        concat!(
            "COALESCE(",
            $param,
            "::BIGINT, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)"
        )
    };
}

/// Takes or renews the fleet's leadership for the worker `$1`, for `$2` milliseconds from `$3`
/// (`NULL`: the server's clock): it succeeds when the row names the worker already or its
/// lease ran out. Returns the time it was judged at when the worker leads, no row otherwise.
pub(crate) const ELECT: &str = concat!(
    "
INSERT INTO signals_leader AS l (name, worker, elected_at, expires_at)
SELECT 'leader', $1, now.at, now.at + $2 FROM (SELECT ",
    clock!("$3"),
    " AS at) AS now
ON CONFLICT (name) DO UPDATE SET worker = EXCLUDED.worker, expires_at = EXCLUDED.expires_at,
    elected_at = CASE WHEN l.worker = EXCLUDED.worker THEN l.elected_at ELSE EXCLUDED.elected_at END
WHERE l.worker = EXCLUDED.worker OR l.expires_at <= EXCLUDED.elected_at
RETURNING l.expires_at - $2"
);

/// Gives the leadership up, if the worker `$1` holds it.
pub(crate) const RESIGN: &str = "DELETE FROM signals_leader WHERE name = 'leader' AND worker = $1";

/// The latest tick of the periodic signal `$1` that fired.
pub(crate) const LAST_TICK: &str = "SELECT MAX(tick_at) FROM signals_ticks WHERE signal = $1";

/// Records the tick `$2` of the periodic signal `$1`, fired by the worker `$3` at `$4` (`NULL`:
/// the server's clock), unless it or a later tick was recorded: one row, the signal may fire;
/// none, another worker fired it (a concurrent insert of the same tick waits for the first to
/// commit, then inserts nothing).
pub(crate) const TICK: &str = concat!(
    "
INSERT INTO signals_ticks (signal, tick_at, fired_at, worker)
SELECT $1, $2, ",
    clock!("$4"),
    ", $3
WHERE NOT EXISTS (SELECT 1 FROM signals_ticks WHERE signal = $1 AND tick_at >= $2)
ON CONFLICT DO NOTHING"
);

/// Deletes up to 10,000 ticks recorded before `$1`, each periodic signal's latest kept (it is
/// what the leader fires after); how many.
pub(crate) const PRUNE_TICKS: &str = "
WITH gone AS (
    DELETE FROM signals_ticks WHERE (signal, tick_at) IN (
        SELECT t.signal, t.tick_at FROM signals_ticks AS t
        WHERE t.tick_at < $1
          AND t.tick_at < (SELECT MAX(m.tick_at) FROM signals_ticks AS m WHERE m.signal = t.signal)
        LIMIT 10000)
    RETURNING 1)
SELECT COUNT(*)::BIGINT FROM gone";

/// Up to 100 dead jobs (no outcome) whose death was not announced: (id, handler, queue,
/// attempt, last error, finished at), through `signals_jobs_unannounced`.
pub(crate) const UNANNOUNCED: &str = "
SELECT id, handler, queue, attempt, last_error, finished_at FROM signals_jobs
WHERE state = 'dead' AND outcome IS NULL AND announced_at IS DISTINCT FROM finished_at
ORDER BY id LIMIT 100";

/// Marks the death of job `$1` (finished at `$2`) announced, unless it was or the job changed
/// since: one row, the caller announces it.
pub(crate) const ANNOUNCE: &str = "
UPDATE signals_jobs SET announced_at = finished_at
WHERE id = $1 AND state = 'dead' AND outcome IS NULL AND finished_at = $2
  AND announced_at IS DISTINCT FROM finished_at";
