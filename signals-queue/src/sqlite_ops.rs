//! The operator's statements on SQLite (the command line, [`AsyncQueue`](crate::AsyncQueue)
//! and [`Queue`](crate::Queue)): job listings, one job with its attempts, retries, discards and
//! cancellations in bounded chunks, paused queues, the handlers workers recorded, and pruning.
//!
//! A job's state as the operator reads it (the *word*): `pending` (waiting and due),
//! `scheduled` (waiting, not yet due: a delay or a retry's backoff), `running`, `done`,
//! `dead`, and beside `dead` the outcomes `discarded` and `cancelled`. `?1` is always the time
//! the words are judged at (the caller's clock: a SQLite file has no clock of its own).

/// The word of a row at `?1`.
macro_rules! word {
    () => {
        "CASE WHEN state = 'pending' AND run_at <= ?1 THEN 'pending'
     WHEN state = 'pending' THEN 'scheduled'
     WHEN state = 'dead' AND outcome IS NOT NULL THEN outcome
     ELSE state END"
    };
}

/// The rows a listing or an action looks at: ids after `?2` (a cursor), among the ids of the
/// JSON array `?3` if not `NULL`, of the handler `?4` and queue `?5` if not `NULL`, in the word
/// `?6` if not `NULL`.
macro_rules! filtered {
    () => {
        concat!(
            "id > ?2
  AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))
  AND (?4 IS NULL OR handler = ?4) AND (?5 IS NULL OR queue = ?5)
  AND (?6 IS NULL OR ",
            word!(),
            " = ?6)"
        )
    };
}

/// The columns of a listed job: (id, handler, queue, word, attempt, max attempts, due at,
/// last error). A job is due at the later of its `run_at` and its creation (fresh jobs are
/// written with `run_at` 0).
macro_rules! listed {
    () => {
        concat!(
            "id, handler, queue, ",
            word!(),
            ", attempt, max_attempts, MAX(run_at, created_at), last_error"
        )
    };
}

/// Up to `?7` jobs of the filter, by id: a walk of the table in id order, filtered.
pub(crate) const JOBS: &str = concat!(
    "SELECT ",
    listed!(),
    " FROM signals_jobs WHERE ",
    filtered!(),
    " ORDER BY id LIMIT ?7"
);

/// One job (`?2`): the listed columns, its payload, its recorded attempts (a JSON array), and
/// its last claim's start, end and worker (a successful attempt's record).
pub(crate) const JOB: &str = concat!(
    "SELECT ",
    listed!(),
    ", payload, attempts, started_at, finished_at, claimed_by FROM signals_jobs WHERE id = ?2"
);

/// What an action may change, by word: `retry` a dead, discarded, cancelled or scheduled job
/// (due now; a dead one's attempts and crashes reset), `discard` a waiting or dead one (it will
/// never run), `cancel` a waiting or running one (a running one's claim is revoked: its
/// worker's completion is refused, and the worker drops it within a second).
macro_rules! applicable {
    (retry) => {
        "(state = 'dead' OR (state = 'pending' AND run_at > ?1))"
    };
    (discard) => {
        "(state = 'pending' OR (state = 'dead' AND outcome IS NULL))"
    };
    (cancel) => {
        "state IN ('pending', 'running')"
    };
}

/// The ids an action changes in one chunk: up to `?7` of the filter, applicable, by id.
macro_rules! chunk {
    ($action:tt) => {
        concat!(
            "SELECT id FROM signals_jobs WHERE ",
            filtered!(),
            " AND ",
            applicable!($action),
            " ORDER BY id LIMIT ?7"
        )
    };
}

/// How many jobs of one chunk an action would change (`--dry-run`): the chunk's ids.
pub(crate) const RETRY_CHUNK: &str = chunk!(retry);
/// See [`RETRY_CHUNK`].
pub(crate) const DISCARD_CHUNK: &str = chunk!(discard);
/// See [`RETRY_CHUNK`].
pub(crate) const CANCEL_CHUNK: &str = chunk!(cancel);

/// Retries one chunk; the ids it changed.
pub(crate) const RETRY: &str = concat!(
    "
UPDATE signals_jobs
SET run_at = ?1, finished_at = NULL, outcome = NULL,
    attempt = CASE WHEN state = 'dead' THEN 0 ELSE attempt END,
    crashes = CASE WHEN state = 'dead' THEN 0 ELSE crashes END,
    state = 'pending'
WHERE id IN (",
    chunk!(retry),
    ")
RETURNING id"
);

/// Discards one chunk; the ids it changed.
pub(crate) const DISCARD: &str = concat!(
    "
UPDATE signals_jobs
SET state = 'dead', outcome = 'discarded', finished_at = ?1, token = NULL, worker = NULL,
    last_error = COALESCE(last_error, 'discarded by an operator')
WHERE id IN (",
    chunk!(discard),
    ")
RETURNING id"
);

/// Cancels one chunk; the ids it changed.
pub(crate) const CANCEL: &str = concat!(
    "
UPDATE signals_jobs
SET state = 'dead', outcome = 'cancelled', finished_at = ?1, token = NULL, worker = NULL
WHERE id IN (",
    chunk!(cancel),
    ")
RETURNING id"
);

/// The jobs by queue, handler and word, with the oldest due job's due time per group: one
/// part per partial index (waiting through `signals_jobs_claim`, running through
/// `signals_jobs_worker`, dead through `signals_jobs_dead`), so that no part reads done rows;
/// done from the kept counts, each handler's queue from `signals_handlers` (or any job of it).
pub(crate) const OVERVIEW: &str = "
SELECT queue, handler, CASE WHEN run_at <= ?1 THEN 'pending' ELSE 'scheduled' END, COUNT(*),
       MIN(CASE WHEN run_at <= ?1 THEN MAX(run_at, created_at) END)
FROM signals_jobs WHERE state = 'pending' GROUP BY 1, 2, 3
UNION ALL
SELECT queue, handler, 'running', COUNT(*), NULL FROM signals_jobs
WHERE state = 'running' GROUP BY 1, 2
UNION ALL
SELECT queue, handler, COALESCE(outcome, 'dead'), COUNT(*), NULL FROM signals_jobs
WHERE state = 'dead' GROUP BY 1, 2, 3
UNION ALL
SELECT COALESCE(
           (SELECT queue FROM signals_handlers AS h WHERE h.name = c.handler),
           (SELECT queue FROM signals_jobs AS j WHERE j.handler = c.handler LIMIT 1),
           'default'),
       c.handler, 'done', SUM(c.done), NULL
FROM signals_job_counts AS c GROUP BY c.handler HAVING SUM(c.done) > 0";

/// The queues an operator paused or resumed: (name, paused).
pub(crate) const QUEUES: &str = "SELECT name, paused FROM signals_queues";

/// Pauses (`?2` true) or resumes the queue `?1` at `?3`.
pub(crate) const SET_PAUSED: &str = "
INSERT INTO signals_queues (name, paused, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";

/// Records a handler a worker runs: (name, signal, queue, max attempts, kind) at `?6`.
pub(crate) const RECORD_HANDLER: &str = "
INSERT INTO signals_handlers (name, signal, queue, max_attempts, kind, seen_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (name) DO UPDATE SET signal = excluded.signal, queue = excluded.queue,
    max_attempts = excluded.max_attempts, kind = excluded.kind, seen_at = excluded.seen_at";

/// Of the ids `?1` (a JSON array: jobs a worker runs), those an operator cancelled.
pub(crate) const CANCELLED_OF: &str = "
SELECT id FROM signals_jobs
WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'dead' AND outcome = 'cancelled'";

/// Deletes up to 10,000 dead, discarded and cancelled jobs that finished before `?1` (the
/// caller repeats while a statement deletes that many), through `signals_jobs_dead`.
pub(crate) const PURGE_FINISHED: &str = "
DELETE FROM signals_jobs WHERE id IN (
    SELECT id FROM signals_jobs WHERE state = 'dead' AND finished_at < ?1 LIMIT 10000)";

/// The statement of `action` (or of its dry run).
pub(crate) fn action_sql(action: crate::ops::Action, dry_run: bool) -> &'static str {
    match (action, dry_run) {
        (crate::ops::Action::Retry, false) => RETRY,
        (crate::ops::Action::Retry, true) => RETRY_CHUNK,
        (crate::ops::Action::Discard, false) => DISCARD,
        (crate::ops::Action::Discard, true) => DISCARD_CHUNK,
        (crate::ops::Action::Cancel, false) => CANCEL,
        (crate::ops::Action::Cancel, true) => CANCEL_CHUNK,
    }
}

/// Takes or renews the fleet's leadership for the worker `?1`, for `?2` milliseconds from `?3`
/// (the caller's clock: the leader's decides on SQLite); returns `?3` when the worker leads,
/// no row otherwise.
pub(crate) const ELECT: &str = "
INSERT INTO signals_leader (name, worker, elected_at, expires_at)
VALUES ('leader', ?1, ?3, ?3 + ?2)
ON CONFLICT (name) DO UPDATE SET worker = excluded.worker, expires_at = excluded.expires_at,
    elected_at = CASE WHEN signals_leader.worker = excluded.worker
                      THEN signals_leader.elected_at ELSE excluded.elected_at END
WHERE signals_leader.worker = excluded.worker OR signals_leader.expires_at <= excluded.elected_at
RETURNING expires_at - ?2";

/// Gives the leadership up, if the worker `?1` holds it.
pub(crate) const RESIGN: &str = "DELETE FROM signals_leader WHERE name = 'leader' AND worker = ?1";

/// The latest tick of the periodic signal `?1` that fired.
pub(crate) const LAST_TICK: &str = "SELECT MAX(tick_at) FROM signals_ticks WHERE signal = ?1";

/// Records the tick `?2` of the periodic signal `?1`, fired by the worker `?3` at `?4`, unless
/// it or a later tick was recorded (see `postgres_ops::TICK`).
pub(crate) const TICK: &str = "
INSERT OR IGNORE INTO signals_ticks (signal, tick_at, fired_at, worker)
SELECT ?1, ?2, ?4, ?3
WHERE NOT EXISTS (SELECT 1 FROM signals_ticks WHERE signal = ?1 AND tick_at >= ?2)";

/// Deletes up to 10,000 ticks recorded before `?1`, each periodic signal's latest kept.
pub(crate) const PRUNE_TICKS: &str = "
DELETE FROM signals_ticks WHERE (signal, tick_at) IN (
    SELECT t.signal, t.tick_at FROM signals_ticks AS t
    WHERE t.tick_at < ?1
      AND t.tick_at < (SELECT MAX(m.tick_at) FROM signals_ticks AS m WHERE m.signal = t.signal)
    LIMIT 10000)";

/// Up to 100 dead jobs (no outcome) whose death was not announced (see `postgres_ops`).
pub(crate) const UNANNOUNCED: &str = "
SELECT id, handler, queue, attempt, last_error, finished_at FROM signals_jobs
WHERE state = 'dead' AND outcome IS NULL AND announced_at IS NOT finished_at
ORDER BY id LIMIT 100";

/// Marks the death of job `?1` (finished at `?2`) announced, unless it was or the job changed.
pub(crate) const ANNOUNCE: &str = "
UPDATE signals_jobs SET announced_at = finished_at
WHERE id = ?1 AND state = 'dead' AND outcome IS NULL AND finished_at = ?2
  AND announced_at IS NOT finished_at";
