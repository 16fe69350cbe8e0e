-- 0009: alerts an operator's monitoring reads (`ue-resync monitor --check`), their
-- thresholds, and the pruning of the history tables.

-- Section: settings

-- Operator-editable knobs, one row each: `UPDATE resync.settings SET value = '20' WHERE name =
-- 'queued_jobs'`. A deleted row falls back to the default written here. Each value is checked
-- on write, so a typo fails the UPDATE rather than the monitoring.
CREATE TABLE IF NOT EXISTS resync.settings (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    description text,
    CONSTRAINT settings_value_sane CHECK (CASE
        WHEN name IN ('failed_jobs_last_hour', 'queued_jobs', 'unit_failures_24h')
            THEN value ~ '^[0-9]{1,9}$'
        WHEN name IN ('due_job_wait', 'worker_heartbeat_fresh')
            THEN value::interval > interval '0'
        -- Below a day, the 24-hour alert would lose the failures it counts.
        WHEN name = 'retention_success'
            THEN value::interval >= interval '1 day'
        ELSE true END)
);

-- The first three are the old system's suggested alerts ("Alertes suggérées").
INSERT INTO resync.settings (name, value, description) VALUES
    ('failed_jobs_last_hour', '10',
     'alert failed_jobs_last_hour (warning) when more jobs than this failed in the last hour '
     'and are still failed'),
    ('queued_jobs', '100',
     'alert queued_jobs (warning) when more jobs than this are queued, due or delayed'),
    ('unit_failures_24h', '3',
     'alert unit_failures_24h (warning, one per UE) when a UE failed at least this many times '
     'in 24 hours'),
    ('due_job_wait', '5 minutes',
     'alert due_job_wait (critical) when a due job has waited longer than this'),
    ('worker_heartbeat_fresh', '30 seconds',
     'a worker is live when its heartbeat is younger than this; alert no_live_worker '
     '(critical) when jobs are due and no worker is live'),
    ('retention_success', '30 days',
     'resync.prune_history() deletes run history, pgqueuer log and statistics, sync failures '
     'and stopped workers older than this; nothing about a job still in the queue (a failed '
     'job included, until retried or forgotten) is deleted')
ON CONFLICT (name) DO NOTHING;

-- Section: alerts

-- resync.alerts: one row per alert firing now; no row means all is well. Severities:
--   critical  the queue is not being worked: due_job_wait, no_live_worker
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
    FROM resync.settings
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
-- Failures per UE in the last 24 hours: the daemon's failed attempts, and the inline syncs
-- that failed for another reason than the contention deferral exists for (lock_timeout
-- 55P03, deadlock and serialization failures, class 40), which are routine on a busy UE.
unit_failures AS (
    SELECT f.course_unit_id, count(*) AS n, max(f.at) AS last_at,
           (array_agg(f.error ORDER BY f.at DESC))[1] AS last_error
    FROM (
        SELECT r.course_unit_id, r.finished_at AS at, r.error
        FROM resync.run_history r
        WHERE r.outcome IN ('retrying', 'failed', 'superseded')
          AND r.finished_at > now() - interval '24 hours'
          AND r.course_unit_id IS NOT NULL
        UNION ALL
        SELECT f.course_unit_id, f.failed_at, f.error
        FROM resync.sync_failures f
        WHERE f.failed_at > now() - interval '24 hours'
          AND f.sqlstate <> '55P03' AND f.sqlstate NOT LIKE '40%'
    ) f
    GROUP BY f.course_unit_id
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
              AND j.headers ->> 'course_unit_id' = d.course_unit_id::text)
    ) d
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
                  coalesce(u.code::text, '?'), f.course_unit_id, f.n,
                  to_char(f.last_at, 'YYYY-MM-DD HH24:MI:SS'),
                  coalesce(left(f.last_error, 300), 'no error text'))
    FROM unit_failures f
    CROSS JOIN s
    LEFT JOIN public.course_units u ON u.id = f.course_unit_id
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

-- Section: housekeeping

-- resync.prune_history: called by the check timer (and by hand); returns the rows deleted.
-- Deletes what is older than p_now - retention_success: finished runs, pgqueuer log rows,
-- pgqueuer statistics, sync failures, and workers stopped (or silent) since then that no
-- remaining run names. Nothing about a job still in resync.pgqueuer is deleted, so a failed
-- job keeps its runs, tracebacks and failures until it is retried or forgotten; 'running'
-- rows are never deleted. p_now is for tests, which prune "in 31 days" instead of waiting.
-- Two callers at once (two hosts' timers): the second returns 0 at once.
CREATE OR REPLACE FUNCTION resync.prune_history(p_now timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_rows   integer;
    v_total  integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('ue-resync prune_history')) THEN
        RETURN 0;
    END IF;
    v_cutoff := p_now - coalesce(
        (SELECT s.value FROM resync.settings s WHERE s.name = 'retention_success'),
        '30 days')::interval;

    DELETE FROM resync.run_history r
    WHERE r.outcome <> 'running'
      AND coalesce(r.finished_at, r.started_at) < v_cutoff
      AND NOT EXISTS (SELECT 1 FROM resync.pgqueuer q WHERE q.id = r.job_id);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    DELETE FROM resync.pgqueuer_log l
    WHERE l.created < v_cutoff
      AND NOT EXISTS (SELECT 1 FROM resync.pgqueuer q WHERE q.id = l.job_id);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    DELETE FROM resync.pgqueuer_statistics st
    WHERE st.created < v_cutoff;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    DELETE FROM resync.sync_failures f
    WHERE f.failed_at < v_cutoff
      AND (f.job_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM resync.pgqueuer q WHERE q.id = f.job_id));
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    -- After the runs: a worker row stays while a run still names it (job_runs shows its host).
    DELETE FROM resync.workers w
    WHERE greatest(w.heartbeat_at, w.stopped_at) < v_cutoff
      AND NOT EXISTS (SELECT 1 FROM resync.run_history r WHERE r.worker_id = w.id);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    RETURN v_total;
END
$$;

-- Section: privileges (0008 explains why PUBLIC loses EXECUTE)

REVOKE EXECUTE ON FUNCTION resync.prune_history(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION resync.prune_history(timestamptz) TO resync_worker;
GRANT SELECT ON resync.alerts TO resync_monitor;
