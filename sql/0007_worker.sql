-- 0007: what the daemon records, and the operator's views and functions over the queue.

-- Section: tables

-- Live daemons: each upserts its row every few seconds (ue-resync work).
CREATE TABLE IF NOT EXISTS resync.workers (
    id            uuid        PRIMARY KEY,  -- pgqueuer's queue_manager_id of this daemon
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    version       text        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);

-- One row per attempt at a job. pgqueuer's log batches its writes, so its timestamps are
-- not run times; these are. A row still 'running' whose job is picked again belonged to
-- a daemon that died: start_runs marks it 'crashed' and counts it as an attempt.
CREATE TABLE IF NOT EXISTS resync.run_history (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          bigint      NOT NULL,
    course_unit_id  bigint,     -- NULL when the payload did not name one
    attempt         integer     NOT NULL,
    reason          text,
    worker_id       uuid,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    locked_at       timestamptz,            -- the UE row lock was held from here to commit
    finished_at     timestamptz,
    outcome         text        NOT NULL DEFAULT 'running' CHECK (outcome IN (
        'running',        -- taken by a worker, not finished (yet)
        'succeeded',      -- UE resynced
        'missing_unit',   -- the UE no longer exists: job done, no retry
        'retrying',       -- failed; the job is queued again after the backoff
        'failed',         -- failed on the last attempt; the job is kept with status failed
        'invalid',        -- the job itself is unusable (payload, entrypoint): failed at once
        'crashed',        -- the worker died while running it
        'interrupted',    -- the worker lost its database connection; not counted as an attempt
        'superseded')),   -- failed, but a newer queued job for the UE takes over
    error           text,
    sqlstate        text,
    changes         jsonb
);
CREATE INDEX IF NOT EXISTS run_history_job_idx ON resync.run_history (job_id);
CREATE INDEX IF NOT EXISTS run_history_running_idx ON resync.run_history (job_id)
    WHERE outcome = 'running';
CREATE INDEX IF NOT EXISTS run_history_finished_idx ON resync.run_history (finished_at);
CREATE INDEX IF NOT EXISTS run_history_unit_idx ON resync.run_history (course_unit_id, finished_at);

-- Section: helpers

-- A payload as jsonb, or NULL when it is not a JSON object in UTF-8.
CREATE OR REPLACE FUNCTION resync.payload_json(p_payload bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb;
BEGIN
    v := convert_from(p_payload, 'UTF8')::jsonb;
    RETURN CASE WHEN jsonb_typeof(v) = 'object' THEN v END;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- Wake every listening worker, in the shape pgqueuer's listener expects. An UPDATE that
-- re-queues a job does not fire pgqueuer's INSERT notification, so re-queuers call this.
CREATE OR REPLACE FUNCTION resync.wake_workers() RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('ue_resync', json_build_object(
        'channel', 'ue_resync', 'operation', 'update', 'sent_at', now(),
        'table', 'pgqueuer', 'type', 'table_changed_event')::text)
$$;

-- Section: the daemon's calls

-- resync.start_runs: called by a daemon right after pgqueuer handed it jobs.
-- Marks runs left 'running' by a dead daemon as 'crashed' and adds them to the job's
-- attempts (pgqueuer's stale re-pick does not count them), then opens one 'running' row
-- per job. Returns per job the attempt this run is (1 = first) and the run id.
CREATE OR REPLACE FUNCTION resync.start_runs(
    p_job_ids bigint[], p_units bigint[], p_reasons text[], p_worker uuid
) RETURNS TABLE (job_id bigint, run_id bigint, attempt integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH crashed AS (
        UPDATE resync.run_history r
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
    INSERT INTO resync.run_history AS r (job_id, course_unit_id, attempt, reason, worker_id)
    SELECT j.id, j.unit, coalesce(q.attempts, 0) + 1, j.reason, p_worker
    FROM unnest(p_job_ids, p_units, p_reasons) AS j(id, unit, reason)
    LEFT JOIN resync.pgqueuer q ON q.id = j.id
    RETURNING r.job_id, r.id, r.attempt;
END
$$;

-- resync.release_jobs: a daemon that lost its database connection, once reconnected, hands
-- back the jobs it held: their open runs become 'interrupted' (not an attempt), and each job
-- is queued again now, or dropped when its UE already has a queued job. Returns how many.
CREATE OR REPLACE FUNCTION resync.release_jobs(p_worker uuid) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job record;
    v_count integer := 0;
BEGIN
    UPDATE resync.run_history r
    SET outcome = 'interrupted', finished_at = clock_timestamp(),
        error = 'the worker lost its database connection'
    WHERE r.worker_id = p_worker AND r.outcome = 'running';

    FOR v_job IN
        SELECT q.id, q.headers ->> 'course_unit_id' AS unit
        FROM resync.pgqueuer q
        WHERE q.status = 'picked' AND q.queue_manager_id = p_worker
        ORDER BY q.id
        FOR UPDATE SKIP LOCKED
    LOOP
        IF v_job.unit IS NOT NULL AND EXISTS (
            SELECT 1 FROM resync.pgqueuer s
            WHERE s.entrypoint = 'resync_course_unit' AND s.status = 'queued'
              AND s.headers ->> 'course_unit_id' = v_job.unit
        ) THEN
            DELETE FROM resync.pgqueuer WHERE id = v_job.id;
        ELSE
            UPDATE resync.pgqueuer
            SET status = 'queued', queue_manager_id = NULL, updated = now()
            WHERE id = v_job.id;
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
        UPDATE resync.run_history r
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
    UPDATE resync.run_history r
    SET outcome = f.outcome, error = left(f.error, 4000), sqlstate = f.sqlstate,
        finished_at = clock_timestamp()
    FROM unnest(p_run_ids, p_outcomes, p_errors, p_sqlstates) AS f(run_id, outcome, error, sqlstate)
    WHERE r.id = f.run_id
$$;

-- resync.retry_job: pgqueuer's retry (re-queue after a delay, attempts + 1, log 'queued'),
-- made coalescing-aware: when the UE already has a newer queued job, that job takes over
-- (due no later than this retry would have been) and this one leaves the queue as
-- 'deleted'. Returns true when this job itself was re-queued.
CREATE OR REPLACE FUNCTION resync.retry_job(p_job_id bigint, p_delay interval, p_traceback jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_unit text;
    v_sibling bigint;
BEGIN
    SELECT q.headers ->> 'course_unit_id' INTO v_unit
    FROM resync.pgqueuer q WHERE q.id = p_job_id AND q.entrypoint = 'resync_course_unit';

    IF v_unit IS NOT NULL THEN
        UPDATE resync.pgqueuer s
        SET execute_after = least(s.execute_after, now() + p_delay), updated = now()
        WHERE s.entrypoint = 'resync_course_unit' AND s.status = 'queued'
          AND s.headers ->> 'course_unit_id' = v_unit AND s.id <> p_job_id
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
        INSERT INTO resync.run_history
            (job_id, attempt, worker_id, outcome, started_at, finished_at, error)
        SELECT f.id, f.attempts + 1, p_worker, 'invalid', statement_timestamp(), statement_timestamp(),
               format('unknown entrypoint %L: this queue only runs resync_course_unit',
                      regexp_replace(left(f.entrypoint, 100), '[[:cntrl:]]', '?', 'g'))
        FROM failed f
    )
    SELECT count(*)::integer FROM failed
$$;

-- Section: operator functions (the old queue:retry, queue:forget, queue:flush, queue:clear)

-- resync.retry_failed: re-queue failed jobs now (NULL = all), attempts reset, and wake
-- the workers. A UE that meanwhile got a queued job keeps that one, due now; the failed
-- job is then dropped. Returns how many failed jobs were handled; an id that is not a
-- failed job is an error.
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
        SELECT q.id, q.entrypoint, q.priority, q.headers ->> 'course_unit_id' AS unit
        FROM resync.pgqueuer q
        WHERE q.status = 'failed' AND (p_job_id IS NULL OR q.id = p_job_id)
        ORDER BY q.id
        FOR UPDATE
    LOOP
        UPDATE resync.pgqueuer s SET execute_after = now(), updated = now()
        WHERE v_job.unit IS NOT NULL AND s.entrypoint = 'resync_course_unit'
          AND s.status = 'queued' AND s.headers ->> 'course_unit_id' = v_job.unit;
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

-- resync.forget_failed: delete failed jobs (NULL = all, the old queue:flush). Returns how
-- many; an id that is not a failed job is an error.
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

-- Section: views

-- resync.job_runs: one row per attempt, newest first in practice.
CREATE OR REPLACE VIEW resync.job_runs AS
SELECT r.id AS run_id, r.job_id, r.course_unit_id, u.code, r.attempt, r.reason, r.outcome,
       r.started_at, r.finished_at, r.finished_at - r.started_at AS duration,
       r.error, r.sqlstate, r.changes, r.worker_id, w.hostname
FROM resync.run_history r
LEFT JOIN public.course_units u ON u.id = r.course_unit_id
LEFT JOIN resync.workers w ON w.id = r.worker_id;

-- resync.failed_jobs: jobs kept with status failed, with the last error we recorded and
-- pgqueuer's traceback.
CREATE OR REPLACE VIEW resync.failed_jobs AS
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
    SELECT r.error, r.sqlstate FROM resync.run_history r
    WHERE r.job_id = q.id ORDER BY r.id DESC LIMIT 1
) last_run ON true
LEFT JOIN LATERAL (
    SELECT l.traceback FROM resync.pgqueuer_log l
    WHERE l.job_id = q.id AND l.traceback IS NOT NULL ORDER BY l.created DESC LIMIT 1
) last_log ON true
WHERE q.status = 'failed';

-- resync.queue_status: one row, the figures of `ue-resync monitor`.
CREATE OR REPLACE VIEW resync.queue_status AS
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
    (SELECT avg(r.finished_at - r.started_at) FROM resync.run_history r
     WHERE r.finished_at > now() - interval '1 hour' AND r.outcome <> 'crashed') AS run_time_avg,
    (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY r.finished_at - r.started_at)
     FROM resync.run_history r
     WHERE r.finished_at > now() - interval '1 hour' AND r.outcome <> 'crashed')  AS run_time_p95,
    (SELECT count(*) FROM resync.workers w
     WHERE w.stopped_at IS NULL AND w.heartbeat_at > now() - interval '30 seconds') AS live_workers
FROM resync.pgqueuer q;
