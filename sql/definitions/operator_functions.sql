-- What an operator calls in psql (the old artisan queue:retry, queue:forget, queue:clear and
-- dispatchSync), and the pruning the check timer runs.

-- resync.sync_now: resync one UE in the caller's transaction (the old dispatchSync).
-- Called by: an operator in psql, `ue-resync sync` (queries.sql, sync_now).
-- Writes: course_units through resync.sync_units, last_job_sync included. Returns
--   {{"course_unit_id", "code", "changes": {{"col": [from, to]}}}}; an unknown id is an error
--   (no_data_found), so a typo is not mistaken for a UE already in sync.
CREATE OR REPLACE FUNCTION resync.sync_now(p_course_unit_id bigint) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_result jsonb;
BEGIN
    SELECT jsonb_build_object('course_unit_id', s.course_unit_id, 'code', s.code,
                              'changes', s.changes)
    INTO v_result
    FROM resync.sync_units(array[p_course_unit_id], true, false) s;
    IF v_result IS NULL THEN
        RAISE EXCEPTION 'resync.sync_now: course unit % does not exist', p_course_unit_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN v_result;
END
$$;

-- resync.retry_failed: re-queue failed jobs now (NULL = all), the old queue:retry.
-- Called by: an operator in psql, `ue-resync retry` (queries.sql, retry_failed).
-- Writes: resync.pgqueuer (status queued, due now, attempts reset), resync.pgqueuer_log, and a
--   NOTIFY to the workers. A UE that meanwhile got a queued job keeps that one, made due now,
--   and the failed job is dropped (logged 'deleted'). Returns how many failed jobs were handled;
--   an id that is not a failed job is an error.
-- Why: the NOTIFY, because pgqueuer's trigger only wakes workers on INSERT, not on this UPDATE.
CREATE OR REPLACE FUNCTION resync.retry_failed(p_job_id bigint DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job record;
    v_count integer := 0;
BEGIN
    IF p_job_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM resync.pgqueuer WHERE id = p_job_id AND status = 'failed'
    ) THEN
        RAISE EXCEPTION 'no failed job with id %', p_job_id
            USING ERRCODE = 'no_data_found', HINT = 'SELECT * FROM resync.failed_jobs';
    END IF;

    FOR v_job IN
        SELECT q.id, q.entrypoint, q.priority, q.resync_unit AS unit
        FROM resync.pgqueuer q
        WHERE q.status = 'failed' AND (p_job_id IS NULL OR q.id = p_job_id)
        ORDER BY q.id
        FOR UPDATE
    LOOP
        UPDATE resync.pgqueuer s SET execute_after = now(), updated = now()
        WHERE v_job.unit IS NOT NULL AND s.entrypoint = 'resync_course_unit'
          AND s.status = 'queued' AND s.resync_unit = v_job.unit;
        IF FOUND THEN
            -- The UE's queued job, now due, does this job's work.
            DELETE FROM resync.pgqueuer WHERE id = v_job.id;
            INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority)
            VALUES (v_job.id, 'deleted', v_job.entrypoint, v_job.priority);
        ELSE
            UPDATE resync.pgqueuer
            SET status = 'queued', execute_after = now(), updated = now(), attempts = 0,
                queue_manager_id = NULL
            WHERE id = v_job.id;
            INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority)
            VALUES (v_job.id, 'queued', v_job.entrypoint, v_job.priority);
        END IF;
        v_count := v_count + 1;
    END LOOP;

    IF v_count > 0 THEN
        PERFORM resync.wake_workers();
    END IF;
    RETURN v_count;
END
$$;

-- resync.forget_failed: delete failed jobs (NULL = all), the old queue:forget / queue:flush.
-- Called by: an operator in psql, `ue-resync forget` and `ue-resync flush` (queries.sql, forget_failed).
-- Writes: resync.pgqueuer (DELETE), resync.pgqueuer_log ('deleted'). Returns how many; an id
--   that is not a failed job is an error.
CREATE OR REPLACE FUNCTION resync.forget_failed(p_job_id bigint DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH gone AS (
        DELETE FROM resync.pgqueuer q
        WHERE q.status = 'failed' AND (p_job_id IS NULL OR q.id = p_job_id)
        RETURNING q.id, q.entrypoint, q.priority
    ), logged AS (
        INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority)
        SELECT gone.id, 'deleted', gone.entrypoint, gone.priority FROM gone
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM logged;

    IF p_job_id IS NOT NULL AND v_count = 0 THEN
        RAISE EXCEPTION 'no failed job with id %', p_job_id
            USING ERRCODE = 'no_data_found', HINT = 'SELECT * FROM resync.failed_jobs';
    END IF;
    RETURN v_count;
END
$$;

-- resync.clear_queue: delete every queued job (not running, not failed); returns them.
CREATE OR REPLACE FUNCTION resync.clear_queue()
RETURNS TABLE (job_id bigint, course_unit_id text, reason text, execute_after timestamptz)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM resync.pgqueuer q
        WHERE q.status = 'queued' AND q.entrypoint = 'resync_course_unit'
        RETURNING q.id, q.entrypoint, q.priority, q.headers, q.execute_after
    ), logged AS (
        INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority)
        SELECT gone.id, 'deleted', gone.entrypoint, gone.priority FROM gone
    )
    SELECT gone.id, gone.headers ->> 'course_unit_id', gone.headers ->> 'reason',
           gone.execute_after
    FROM gone ORDER BY gone.id
$$;

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
        (SELECT s.value FROM resync.thresholds s WHERE s.name = 'retention_success'),
        '30 days')::interval;

    DELETE FROM resync.job_runs r
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
      AND NOT EXISTS (SELECT 1 FROM resync.job_runs r WHERE r.worker_id = w.id);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    RETURN v_total;
END
$$;
