-- What the daemon calls around each batch of jobs (daemon/ue_resync/queries.sql): open a run
-- per attempt, resync and close the runs, record failures, retry coalescing-aware, hand jobs
-- back after a lost connection, and fail jobs nobody can run. None is SECURITY DEFINER: they
-- run with resync_worker's rights (roles_and_grants.sql).

-- resync.start_runs: open one 'running' run per job the daemon was just handed.
-- Called by: the daemon (queries.sql, start_runs) right after pgqueuer's dequeue, in a transaction of its
--   own that commits before the resync starts, so a run survives the resync's rollback.
-- Writes: resync.job_runs (one row per job; runs a dead daemon left 'running' become
--   'crashed'), resync.pgqueuer.attempts (+ 1 per crashed run). Returns per job the attempt
--   this run is (1 = first) and the run id.
-- Why: pgqueuer's re-pick of a stale job does not count the attempt that died with its daemon;
--   without this a job that crashes its daemon would be retried forever.
CREATE OR REPLACE FUNCTION resync.start_runs(
    p_job_ids bigint[], p_units bigint[], p_reasons text[], p_worker uuid
) RETURNS TABLE (job_id bigint, run_id bigint, attempt integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH crashed AS (
        UPDATE resync.job_runs r
        SET outcome = 'crashed', finished_at = clock_timestamp(),
            error = 'the worker running this job stopped before finishing it'
        WHERE r.job_id = ANY (p_job_ids) AND r.outcome = 'running'
        RETURNING r.job_id
    )
    UPDATE resync.pgqueuer q
    SET attempts = q.attempts + c.n
    FROM (SELECT crashed.job_id, count(*)::integer AS n FROM crashed GROUP BY 1) c
    WHERE q.id = c.job_id;

    RETURN QUERY
    INSERT INTO resync.job_runs AS r (job_id, course_unit_id, attempt, reason, worker_id)
    SELECT j.id, j.unit, coalesce(q.attempts, 0) + 1, j.reason, p_worker
    FROM unnest(p_job_ids, p_units, p_reasons) AS j(id, unit, reason)
    LEFT JOIN resync.pgqueuer q ON q.id = j.id
    RETURNING r.job_id, r.id, r.attempt;
END
$$;

-- resync.release_jobs: hand back the jobs of a daemon that lost its database connection.
-- Called by: that daemon once reconnected (queries.sql, release_jobs), with its own queue_manager_id.
-- Writes: resync.job_runs (its open runs become 'interrupted', not an attempt), resync.pgqueuer
--   (each job it held is queued again now, or deleted when its UE already has a queued job,
--   which will do the same work). Returns how many jobs it released.
-- Why: SKIP LOCKED, because another daemon may already be taking the job over as stale; the UE
--   test keeps the one-queued-job-per-UE index from refusing the re-queue, and the
--   unique_violation handler covers the job the test cannot see yet: another daemon releasing a
--   job of the same UE at the same moment (both reconnect together after a failover), or a
--   writer queuing one, not yet committed.
CREATE OR REPLACE FUNCTION resync.release_jobs(p_worker uuid) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job record;
    v_count integer := 0;
BEGIN
    UPDATE resync.job_runs r
    SET outcome = 'interrupted', finished_at = clock_timestamp(),
        error = 'the worker lost its database connection'
    WHERE r.worker_id = p_worker AND r.outcome = 'running';

    FOR v_job IN
        SELECT q.id, q.resync_unit AS unit
        FROM resync.pgqueuer q
        WHERE q.status = 'picked' AND q.queue_manager_id = p_worker
        ORDER BY q.id
        FOR UPDATE SKIP LOCKED
    LOOP
        IF v_job.unit IS NOT NULL AND EXISTS (
            SELECT 1 FROM resync.pgqueuer s
            WHERE s.entrypoint = 'resync_course_unit' AND s.status = 'queued'
              AND s.resync_unit = v_job.unit
        ) THEN
            DELETE FROM resync.pgqueuer WHERE id = v_job.id;
        ELSE
            BEGIN
                UPDATE resync.pgqueuer
                SET status = 'queued', queue_manager_id = NULL, updated = now()
                WHERE id = v_job.id;
            EXCEPTION WHEN unique_violation THEN
                DELETE FROM resync.pgqueuer WHERE id = v_job.id;
            END;
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- resync.complete_runs: the daemon's resync of a batch, in the caller's transaction
-- (which sets statement_timeout and lock_timeout). Syncs the UEs (locking them in id
-- order), then closes each run: succeeded with its changes, or missing_unit.
CREATE OR REPLACE FUNCTION resync.complete_runs(p_run_ids bigint[], p_units bigint[])
RETURNS TABLE (run_id bigint, course_unit_id bigint, code text, outcome text,
               changes jsonb, duration interval)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH
    -- The sync; a PL/pgSQL set-returning function completes (locks held) before its
    -- first row is read, so clock_timestamp() below is taken under the locks.
    synced AS (
        SELECT s.course_unit_id, s.code, s.changes
        FROM resync.sync_units(p_units, true, false) s
    ),
    closed AS (
        UPDATE resync.job_runs r
        SET outcome     = CASE WHEN s.course_unit_id IS NULL THEN 'missing_unit'
                               ELSE 'succeeded' END,
            locked_at   = clock_timestamp(),
            finished_at = clock_timestamp(),
            changes     = s.changes,
            error       = CASE WHEN s.course_unit_id IS NULL
                               THEN format('course unit %s does not exist', j.unit) END
        FROM unnest(p_run_ids, p_units) AS j(run_id, unit)
        LEFT JOIN synced s ON s.course_unit_id = j.unit
        WHERE r.id = j.run_id
        RETURNING r.id, r.course_unit_id, s.code, r.outcome, r.changes,
                  r.finished_at - r.started_at AS duration
    )
    SELECT * FROM closed
$$;

-- resync.fail_runs: record failed attempts (in a transaction of their own, after the
-- resync rolled back). p_outcomes: retrying | failed | invalid | superseded.
CREATE OR REPLACE FUNCTION resync.fail_runs(
    p_run_ids bigint[], p_outcomes text[], p_errors text[], p_sqlstates text[]
) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE resync.job_runs r
    SET outcome = f.outcome, error = left(f.error, 4000), sqlstate = f.sqlstate,
        finished_at = clock_timestamp()
    FROM unnest(p_run_ids, p_outcomes, p_errors, p_sqlstates) AS f(run_id, outcome, error, sqlstate)
    WHERE r.id = f.run_id
$$;

-- resync.retry_job: pgqueuer's retry (re-queue after a delay, attempts + 1, log 'queued'),
-- made coalescing-aware.
-- Called by: the daemon (queries.sql, retry_job) for a failed attempt that has attempts left.
-- Writes: resync.pgqueuer and resync.pgqueuer_log. When the UE already has a newer queued job,
--   that job takes over (due no later than this retry would have been) and this one leaves the
--   queue, logged 'deleted'; else this job is queued again. Returns true when this job itself
--   was re-queued.
-- Why: re-queuing this job next to the UE's queued one would break the one-queued-job-per-UE
--   index that coalescing relies on.
CREATE OR REPLACE FUNCTION resync.retry_job(p_job_id bigint, p_delay interval, p_traceback jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_unit bigint;
    v_sibling bigint;
BEGIN
    SELECT q.resync_unit INTO v_unit
    FROM resync.pgqueuer q WHERE q.id = p_job_id AND q.entrypoint = 'resync_course_unit';

    IF v_unit IS NOT NULL THEN
        UPDATE resync.pgqueuer s
        SET execute_after = least(s.execute_after, now() + p_delay), updated = now()
        WHERE s.entrypoint = 'resync_course_unit' AND s.status = 'queued'
          AND s.resync_unit = v_unit AND s.id <> p_job_id
        RETURNING s.id INTO v_sibling;
    END IF;

    IF v_sibling IS NOT NULL THEN
        WITH gone AS (
            DELETE FROM resync.pgqueuer q WHERE q.id = p_job_id
            RETURNING q.id, q.entrypoint, q.priority
        )
        INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback)
        SELECT gone.id, 'deleted', gone.entrypoint, gone.priority, p_traceback FROM gone;
        RETURN false;
    END IF;

    WITH retry AS (
        UPDATE resync.pgqueuer q
        SET status = 'queued', execute_after = now() + p_delay, attempts = q.attempts + 1,
            updated = now(), queue_manager_id = NULL
        WHERE q.id = p_job_id
        RETURNING q.id, q.entrypoint, q.priority
    )
    INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback)
    SELECT retry.id, 'queued', retry.entrypoint, retry.priority, p_traceback FROM retry;
    RETURN true;
END
$$;

-- resync.fail_unknown_entrypoints: a job inserted by hand under another entrypoint would
-- wait forever (pgqueuer only dequeues the entrypoints a worker registered): fail it, with
-- a run row that says why. Called by every daemon on each poll. Returns how many.
CREATE OR REPLACE FUNCTION resync.fail_unknown_entrypoints(p_worker uuid) RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH failed AS (
        UPDATE resync.pgqueuer q
        SET status = 'failed', updated = now(), queue_manager_id = NULL
        WHERE q.status = 'queued' AND q.entrypoint <> 'resync_course_unit'
          AND q.execute_after <= now()
        RETURNING q.id, q.entrypoint, q.priority, q.attempts
    ), logged AS (
        INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback)
        SELECT f.id, 'failed', f.entrypoint, f.priority,
               jsonb_build_object('job_id', f.id, 'exception_type', 'UnknownEntrypoint',
                                  'exception_message',
                                  format('unknown entrypoint %L: this queue only runs resync_course_unit',
                      regexp_replace(left(f.entrypoint, 100), '[[:cntrl:]]', '?', 'g')))
        FROM failed f
    ), runs AS (
        INSERT INTO resync.job_runs
            (job_id, attempt, worker_id, outcome, started_at, finished_at, error)
        SELECT f.id, f.attempts + 1, p_worker, 'invalid', statement_timestamp(), statement_timestamp(),
               format('unknown entrypoint %L: this queue only runs resync_course_unit',
                      regexp_replace(left(f.entrypoint, 100), '[[:cntrl:]]', '?', 'g'))
        FROM failed f
    )
    SELECT count(*)::integer FROM failed
$$;
