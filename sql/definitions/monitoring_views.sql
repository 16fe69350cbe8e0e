-- The views monitoring reads (resync_monitor, `ue-resync monitor`, `ue-resync failed`). Each is
-- a security barrier: they hide rows (failed jobs only, firing alerts only), and a reader may
-- define a function in pg_temp; the barrier keeps the planner from running such a function in
-- the reader's WHERE on rows the view filters out. Equality on ids stays pushed down (its
-- operator is leakproof), so `WHERE job_id = …` keeps its index.

-- resync.failed_jobs: jobs kept with status failed, with the last error we recorded and
-- pgqueuer's traceback.
CREATE OR REPLACE VIEW resync.failed_jobs WITH (security_barrier = true) AS
SELECT q.id AS job_id,
       coalesce(q.headers ->> 'course_unit_id',
                resync.payload_json(q.payload) ->> 'course_unit_id') AS course_unit_id,
       coalesce(resync.payload_json(q.payload) ->> 'reason', q.headers ->> 'reason') AS reason,
       q.entrypoint,
       q.attempts + 1 AS attempts,
       last_run.error AS last_error,
       last_run.sqlstate,
       q.updated AS failed_at,
       last_log.traceback,
       q.payload
FROM resync.pgqueuer q
LEFT JOIN LATERAL (
    SELECT r.error, r.sqlstate FROM resync.job_runs r
    WHERE r.job_id = q.id ORDER BY r.id DESC LIMIT 1
) last_run ON true
LEFT JOIN LATERAL (
    SELECT l.traceback FROM resync.pgqueuer_log l
    WHERE l.job_id = q.id AND l.traceback IS NOT NULL ORDER BY l.created DESC LIMIT 1
) last_log ON true
WHERE q.status = 'failed';

-- resync.queue_status: one row, the figures of `ue-resync monitor`.
CREATE OR REPLACE VIEW resync.queue_status WITH (security_barrier = true) AS
SELECT
    count(*) FILTER (WHERE q.status = 'queued')                                AS queued,
    count(*) FILTER (WHERE q.status = 'queued' AND q.execute_after <= now())   AS due,
    count(*) FILTER (WHERE q.status = 'queued' AND q.execute_after > now())    AS delayed,
    count(*) FILTER (WHERE q.status = 'picked')                                AS running,
    count(*) FILTER (WHERE q.status = 'failed'
                       AND q.updated > now() - interval '1 hour')              AS failed_last_hour,
    count(*) FILTER (WHERE q.status = 'failed')                                AS failed_total,
    now() - min(q.execute_after) FILTER (WHERE q.status = 'queued'
                                           AND q.execute_after <= now())       AS oldest_due_age,
    (SELECT avg(r.finished_at - r.started_at) FROM resync.job_runs r
     WHERE r.finished_at > now() - interval '1 hour' AND r.outcome <> 'crashed') AS run_time_avg,
    (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY r.finished_at - r.started_at)
     FROM resync.job_runs r
     WHERE r.finished_at > now() - interval '1 hour' AND r.outcome <> 'crashed')  AS run_time_p95,
    (SELECT count(*) FROM resync.workers w
     WHERE w.stopped_at IS NULL AND w.heartbeat_at > now() - interval '30 seconds') AS live_workers
FROM resync.pgqueuer q;

-- resync.unit_failures: per UE, its failures in the last p_since that no successful sync
-- followed: the daemon's failed attempts, and the inline syncs that failed for another reason
-- than the contention deferral exists for (lock_timeout 55P03, deadlock and serialization
-- failures, class 40), which are routine on a busy UE. A sync of the UE that succeeded after a
-- failure (its last_element_sync or last_job_sync is later: a retried job, `ue-resync sync`, the
-- next write) clears it: an operator's fix clears the alert.
-- Read by: resync.alerts (unit_failures_24h) and the gauge ue_resync_unit_failures_24h_max.
CREATE OR REPLACE FUNCTION resync.unit_failures(p_since interval DEFAULT interval '24 hours')
RETURNS TABLE (course_unit_id bigint, code text, failures bigint, last_at timestamptz,
               last_error text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH
    failed AS (
        SELECT r.course_unit_id, r.finished_at AS at, r.error
        FROM resync.job_runs r
        WHERE r.outcome IN ('retrying', 'failed', 'superseded')
          AND r.finished_at > now() - p_since
          AND r.course_unit_id IS NOT NULL
        UNION ALL
        SELECT f.course_unit_id, f.failed_at, f.error
        FROM resync.sync_failures f
        WHERE f.failed_at > now() - p_since
          AND f.sqlstate <> '55P03' AND f.sqlstate NOT LIKE '40%'
    ),
    -- The UEs that failed, with their latest successful sync.
    unit AS (
        SELECT {u.id}::bigint AS id, {u.code}::text AS code,
               greatest({u.last_element_sync}::timestamptz, {u.last_job_sync}::timestamptz)
                   AS synced
        FROM {units} u
        WHERE {u.id} IN (SELECT failed.course_unit_id FROM failed)
    )
    SELECT f.course_unit_id, u.code, count(*), max(f.at),
           (array_agg(f.error ORDER BY f.at DESC))[1]
    FROM failed f
    LEFT JOIN unit u ON u.id = f.course_unit_id
    WHERE u.synced IS NULL OR f.at > u.synced
    GROUP BY f.course_unit_id, u.code
$$;

-- resync.alerts: one row per alert firing now; no row means all is well. Severities:
--   critical  the queue is not being worked: due_job_wait, no_live_worker; or what ue-resync
--             installed is damaged: installation
--   warning   something needs a look, the system still runs: failed_jobs_last_hour,
--             queued_jobs, unit_failures_24h (a data problem on one UE), drift
-- `ue-resync monitor --check` exits 2 on any critical row, 1 on any warning, 0 on none.
CREATE OR REPLACE VIEW resync.alerts WITH (security_barrier = true) AS
WITH
-- The thresholds as text, as an operator wrote them; a missing row takes its default.
s AS (
    SELECT coalesce(max(value) FILTER (WHERE name = 'failed_jobs_last_hour'), '10')
               AS failed_jobs_last_hour,
           coalesce(max(value) FILTER (WHERE name = 'queued_jobs'), '100') AS queued_jobs,
           coalesce(max(value) FILTER (WHERE name = 'unit_failures_24h'), '3')
               AS unit_failures_24h,
           coalesce(max(value) FILTER (WHERE name = 'due_job_wait'), '5 minutes')
               AS due_job_wait,
           coalesce(max(value) FILTER (WHERE name = 'worker_heartbeat_fresh'), '30 seconds')
               AS worker_heartbeat_fresh
    FROM resync.thresholds
),
-- The queue in one pass. failed_last_hour is the figure `ue-resync monitor` shows (as in
-- resync.queue_status): a job retried or forgotten no longer counts, as in Laravel's
-- failed_jobs table.
q AS (
    SELECT count(*) FILTER (WHERE q.status = 'failed'
                              AND q.updated > now() - interval '1 hour') AS failed_last_hour,
           count(*) FILTER (WHERE q.status = 'queued')                    AS queued,
           count(*) FILTER (WHERE q.status = 'queued'
                              AND q.execute_after <= now())               AS due
    FROM resync.pgqueuer q
),
-- The due job that has waited longest.
oldest AS (
    SELECT q.id, q.headers ->> 'course_unit_id' AS unit, q.execute_after,
           now() - q.execute_after AS waiting
    FROM resync.pgqueuer q
    WHERE q.status = 'queued' AND q.execute_after <= now()
    ORDER BY q.execute_after, q.id
    LIMIT 1
),
-- Workers whose heartbeat is fresh; the latest heartbeat of any, for the detail line.
live AS (
    SELECT count(*) FILTER (WHERE w.stopped_at IS NULL
                              AND w.heartbeat_at > now() - s.worker_heartbeat_fresh::interval)
               AS n,
           max(w.heartbeat_at) AS last_heartbeat
    FROM s LEFT JOIN resync.workers w ON true
    GROUP BY s.worker_heartbeat_fresh
),
unit_failures AS (
    SELECT f.course_unit_id, f.code, f.failures AS n, f.last_at, f.last_error
    FROM resync.unit_failures() f
),
-- Drifted UEs that no queued or running job is about to repair: a UE waiting for its
-- deferred resync is expected to differ for a while (and a job that never runs raises
-- due_job_wait or no_live_worker instead).
drifted AS (
    SELECT count(*) AS n,
           string_agg(d.code::text, ', ' ORDER BY d.course_unit_id)
               FILTER (WHERE d.rank <= 5) AS sample
    FROM (
        SELECT d.course_unit_id, d.code, row_number() OVER (ORDER BY d.course_unit_id) AS rank
        FROM resync.drift d
        WHERE NOT EXISTS (
            SELECT 1 FROM resync.pgqueuer j
            WHERE j.entrypoint = 'resync_course_unit' AND j.status IN ('queued', 'picked')
              AND j.resync_unit = d.course_unit_id)
    ) d
),
-- What migrate installed and the system catalog no longer holds as it was: lost grants after a
-- restore, a trigger dropped with its table, a function replaced by another tool.
installation AS (
    SELECT count(*) AS n,
           string_agg(c.problem, '; ' ORDER BY c.kind, c.name) FILTER (WHERE c.rank <= 3)
               AS sample
    FROM (SELECT d.*, row_number() OVER (ORDER BY d.kind, d.name) AS rank
          FROM resync.installation_differences() d) c
),
fired (name, severity, value, threshold, detail) AS (
    SELECT 'failed_jobs_last_hour', 'warning', q.failed_last_hour::text, s.failed_jobs_last_hour,
           format('%s job(s) failed in the last hour and are still failed: '
                  'ue-resync failed, SELECT * FROM resync.failed_jobs', q.failed_last_hour)
    FROM q, s
    WHERE q.failed_last_hour > s.failed_jobs_last_hour::bigint
    UNION ALL
    SELECT 'queued_jobs', 'warning', q.queued::text, s.queued_jobs,
           format('%s job(s) queued (%s due, %s delayed)', q.queued, q.due, q.queued - q.due)
    FROM q, s
    WHERE q.queued > s.queued_jobs::bigint
    UNION ALL
    SELECT 'unit_failures_24h', 'warning', f.n::text, s.unit_failures_24h,
           format('UE %s (id %s) failed %s times in 24 hours, last at %s: %s',
                  coalesce(f.code, '?'), f.course_unit_id, f.n,
                  to_char(f.last_at, 'YYYY-MM-DD HH24:MI:SS'),
                  coalesce(left(f.last_error, 300), 'no error text'))
    FROM unit_failures f
    CROSS JOIN s
    WHERE f.n >= s.unit_failures_24h::bigint
    UNION ALL
    SELECT 'due_job_wait', 'critical', date_trunc('second', o.waiting)::text, s.due_job_wait,
           format('job %s (UE id %s) due since %s and not taken; %s live worker(s)',
                  o.id, coalesce(o.unit, '?'), to_char(o.execute_after, 'YYYY-MM-DD HH24:MI:SS'),
                  l.n)
    FROM oldest o, s, live l
    WHERE o.waiting > s.due_job_wait::interval
    UNION ALL
    SELECT 'no_live_worker', 'critical', l.n::text, s.worker_heartbeat_fresh,
           format('%s job(s) due and no worker heartbeat within %s (last heartbeat: %s): '
                  'systemctl status ue-resync',
                  q.due, s.worker_heartbeat_fresh,
                  coalesce(to_char(l.last_heartbeat, 'YYYY-MM-DD HH24:MI:SS'), 'never'))
    FROM q, s, live l
    WHERE q.due > 0 AND l.n = 0
    UNION ALL
    SELECT 'installation', 'critical', c.n::text, '0',
           format('%s difference(s) with what ue-resync installed (%s%s): '
                  'ue-resync migrate --verify lists them, ue-resync migrate repairs them',
                  c.n, c.sample, CASE WHEN c.n > 3 THEN '; …' ELSE '' END)
    FROM installation c
    WHERE c.n > 0
    UNION ALL
    SELECT 'drift', 'warning', d.n::text, '0',
           format('%s course unit(s) differ from their elements and no resync is queued '
                  '(%s%s): ue-resync check --enqueue',
                  d.n, d.sample, CASE WHEN d.n > 5 THEN ', …' ELSE '' END)
    FROM drifted d
    WHERE d.n > 0
)
SELECT f.name, f.severity, f.value, f.threshold, f.detail
FROM fired f
ORDER BY f.severity = 'critical' DESC, f.name, f.detail;
