-- Queueing a resync: the one statement that inserts jobs into pgqueuer's table, the reader of
-- their payloads, and the wake-up of the workers for jobs queued by an UPDATE.

-- resync.enqueue: queue a resync of each UE, coalesced into the UE's queued job when it has one.
-- Called by: the element triggers' statement path (deferred mode, p_deferred_mode = true; a
--   failed inline sync, through resync.record_sync_failure), resync.on_request
--   (resync.requests), and resync.enqueue_drifted. p_units must be distinct; p_reasons is
--   aligned with it. The row path (resync.on_element_row) queues a single-row statement's event
--   with its own copy of this statement's deferred-mode rule: keep the two in step
--   (tests/integration/test_debounce.py runs every case through both).
-- Writes: resync.pgqueuer, one row per UE at most while queued (the unique index
--   pgqueuer_resync_queued_unit on resync_unit); pgqueuer's statement trigger NOTIFYs the
--   workers when the caller commits. A job already picked absorbs nothing: a change during a
--   running resync gets its own job. Returns, per UE, the job and whether the event joined an
--   existing one.
-- Every event has a due time and a deadline (the latest it accepts):
--   plain event (failed inline sync, request, drift sweep, or any event with
--     ue_resync.debounce = '0'): due at now() + p_delay; its deadline that same time (stored
--     as NULL).
--   deferred-mode event: UEs with auto_sync_enabled = false are skipped. Due now() on a quiet
--     UE (the leading edge: an isolated change is resynced at once); on a busy UE (the daemon
--     holds a job of it, or resynced it less than ue_resync.debounce ago, default 2s) due a
--     debounce later, and so is any deferred-mode event joining a job that waits for a
--     debounced due time (the trailing edge: a burst gets one resync at its start and one when
--     it quiets down). Its deadline is now() + ue_resync.debounce_max_wait (default 60s).
--   A job keeps the earliest deadline of its events (resync_deadline; NULL while only plain
--   events made it), is never due later than it, and a job already due stays due.
-- Why: a coalesced event writes only columns no index reads (resync_events,
--   resync_last_reason, resync_deadline), so it is a HOT update unless it moves the due time.
--   Whether the daemon holds the UE (a picked job) is looked up only where it decides
--   something: for an event joining a job not yet due, and, after the insert, for a new job
--   due now (which also catches a pick that committed while the insert ran). The payload is
--   written as text: it is what the daemon parses, and building it through jsonb cost more
--   than the rest of the row. PL/pgSQL rather than SQL keeps the plan per session (a SECURITY
--   DEFINER SQL function cannot be inlined, so it would be planned at every call); the
--   statements have one shape whatever the arrays hold, hence the generic plan.
--   enable_seqscan is off because a session often first plans this on an empty queue (the
--   daemon drains it), and a plan made then would scan the whole queue in its busy lookups
--   once jobs pile up.
CREATE OR REPLACE FUNCTION resync.enqueue(
    p_units bigint[], p_reasons text[], p_delay interval,
    p_sqlstate text DEFAULT NULL, p_error text DEFAULT NULL,
    p_deferred_mode boolean DEFAULT false
) RETURNS TABLE (course_unit_id bigint, job_id bigint, coalesced boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_debounce  interval := interval '0';
    v_max_wait  interval := interval '0';
    v_units     bigint[];
    v_ids       bigint[];
    v_coalesced boolean[];
    v_check     bigint[];
BEGIN
    IF p_deferred_mode THEN
        -- The writer's settings; malformed, they are the writer's error.
        v_debounce := coalesce(nullif(current_setting('ue_resync.debounce', true), ''),
                               '2s')::interval;
        v_max_wait := coalesce(nullif(current_setting('ue_resync.debounce_max_wait', true), ''),
                               '60s')::interval;
    END IF;
    WITH queued AS (
        INSERT INTO resync.pgqueuer AS q
            (priority, entrypoint, status, execute_after, payload, headers, resync_unit,
             resync_last_reason, resync_deadline)
        SELECT 0, 'resync_course_unit', 'queued',
               -- Resynced within the debounce: trails. (A job of it picked: checked below.)
               CASE WHEN v_debounce > interval '0' AND cu.last_job_sync > now() - v_debounce
                    THEN now() + least(v_debounce, v_max_wait)
                    ELSE now() + p_delay END,
               convert_to('{{"course_unit_id": ' || u.id
                          || ', "reason": ' || coalesce(to_json(u.reason)::text, 'null')
                          || ', "sqlstate": ' || coalesce(to_json(p_sqlstate)::text, 'null')
                          || ', "error": ' || coalesce(to_json(left(p_error, 1000))::text, 'null')
                          || '}}', 'UTF8'),
               jsonb_build_object('course_unit_id', u.id::text, 'reason', u.reason),
               u.id,
               u.reason,
               CASE WHEN p_deferred_mode AND v_debounce > interval '0' THEN now() + v_max_wait END
        -- One insertion order for every writer: no deadlock on the key. Sorted before the
        -- rows are built, so the sort carries ids and reasons, not payloads.
        FROM (SELECT a.id, a.reason FROM unnest(p_units, p_reasons) AS a(id, reason)
              ORDER BY a.id) u
        -- Deferred-mode events only: the UE itself (auto_sync_enabled, last resynced). A
        -- condition inside, so a plain event reads no UE.
        LEFT JOIN LATERAL (
            SELECT {c.auto_sync_enabled} AS auto_sync_enabled, {c.last_job_sync} AS last_job_sync
            FROM {units} c
            WHERE p_deferred_mode AND {c.id} = u.id
        ) cu ON true
        WHERE NOT p_deferred_mode OR cu.auto_sync_enabled
        ORDER BY u.id
        ON CONFLICT (resync_unit) WHERE entrypoint = 'resync_course_unit' AND status = 'queued'
        DO UPDATE SET
            -- Only execute_after is under an index; it changes only when the event moves it.
            execute_after = CASE
                WHEN excluded.resync_deadline IS NULL  -- a plain event: the earliest due time
                THEN least(q.execute_after, excluded.execute_after)
                WHEN q.execute_after <= now()  -- already due: stays due
                THEN q.execute_after
                -- A deferred-mode event on a job not yet due: a job holding a debounced due
                -- time (before its deadline) is pushed a debounce past this event, even if the
                -- UE has not been resynced lately (the burst goes on); within both deadlines
                -- (a plain job's is its due time). The event itself trails when the UE was
                -- resynced lately or a job of it is picked (its resync is under way). A scalar
                -- subquery with LIMIT, not EXISTS, which the planner may hash over every
                -- picked job.
                ELSE least(coalesce(q.resync_deadline, q.execute_after), excluded.resync_deadline,
                           greatest(CASE WHEN q.execute_after < q.resync_deadline
                                         THEN now() + v_debounce END,
                                    CASE WHEN excluded.execute_after > now()
                                           OR (SELECT true FROM resync.pgqueuer p
                                               WHERE p.resync_unit = excluded.resync_unit
                                                 AND p.entrypoint = 'resync_course_unit'
                                                 AND p.status = 'picked'
                                               LIMIT 1) IS NOT NULL
                                         THEN now() + least(v_debounce, v_max_wait)
                                         ELSE excluded.execute_after END))
                END,
            resync_deadline = CASE
                WHEN q.execute_after <= now()  -- a due job only counts the event
                  OR (q.resync_deadline IS NULL AND excluded.resync_deadline IS NULL)
                THEN q.resync_deadline
                ELSE least(coalesce(q.resync_deadline, q.execute_after),
                           coalesce(excluded.resync_deadline, excluded.execute_after))
                END,
            resync_events      = q.resync_events + 1,
            resync_last_reason = excluded.resync_last_reason
        RETURNING q.resync_unit AS unit, q.id,
                  (q.xmax <> 0) AS coalesced,
                  -- a deferred-mode event's new job, due now: is the UE being resynced?
                  q.xmax = 0 AND q.resync_deadline IS NOT NULL AND q.execute_after <= now()
                      AS check_busy
    )
    SELECT array_agg(queued.unit), array_agg(queued.id), array_agg(queued.coalesced),
           array_agg(queued.id) FILTER (WHERE queued.check_busy)
    INTO v_units, v_ids, v_coalesced, v_check
    FROM queued;

    -- A new job due now for a UE the daemon holds (a job of it picked: its resync is under
    -- way, or about to be) or has just resynced trails that resync. Looked up by a statement
    -- of its own, whose snapshot also sees a pick that committed while the insert ran (the
    -- daemon picked the UE's due job, which would otherwise have absorbed this event, between
    -- the insert's snapshot and its conflict check).
    -- No status condition on q: the planner would then consider scanning pgqueuer's indexes
    -- of queued jobs whole; the rows are this transaction's own, queued.
    IF v_check IS NOT NULL THEN
        UPDATE resync.pgqueuer q
        SET execute_after = now() + least(v_debounce, v_max_wait)
        WHERE q.id = ANY (v_check)
          AND ((SELECT true FROM resync.pgqueuer p
                WHERE p.resync_unit = q.resync_unit
                  AND p.entrypoint = 'resync_course_unit'
                  AND p.status = 'picked'
                LIMIT 1) IS NOT NULL
               -- or picked and resynced since the insert's snapshot
               OR (SELECT {c.last_job_sync} > now() - v_debounce FROM {units} c
                   WHERE {c.id} = q.resync_unit));
    END IF;

    RETURN QUERY SELECT * FROM unnest(v_units, v_ids, v_coalesced);
END
$$;

-- resync.payload_json: a job's payload as jsonb, or NULL when it is not a JSON object in UTF-8.
-- Called by: the view resync.failed_jobs and the daemon's deferred_gauges.sql; writes nothing.
-- Why: a job inserted by hand may carry anything; parsing inside an exception block is the one
--   sure test, and NULL lets the readers fall back on the job's headers.
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

-- resync.wake_workers: wake every listening worker, in the shape pgqueuer's listener expects.
-- Called by: resync.retry_failed. An UPDATE that re-queues a job does not fire pgqueuer's
-- INSERT notification, so re-queuers call this.
CREATE OR REPLACE FUNCTION resync.wake_workers() RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('ue_resync', json_build_object(
        'channel', 'ue_resync', 'operation', 'update', 'sent_at', now(),
        'table', 'pgqueuer', 'type', 'table_changed_event')::text)
$$;

-- Section: the queue table's own triggers

-- resync.fn_pgqueuer_changed: pgqueuer's NOTIFY on any change of its queue table, as pgqueuer
-- 1.6 emits it (0014_baseline.sql), on the daemon's channel ue_resync. Defined here too so that
-- migrate puts it back when another tool rewrote it: `pgq upgrade` without
-- PGQUEUER_CHANNEL=ue_resync points it at ch_pgqueuer, which no daemon listens on (every job
-- then waits for a poll). The daemon's wake-up check goes through this trigger (wakeups.py).
CREATE OR REPLACE FUNCTION resync.fn_pgqueuer_changed() RETURNS TRIGGER AS $$
DECLARE
    to_emit BOOLEAN := false;  -- Flag to decide whether to emit a notification
BEGIN
    -- Check operation type and set the emit flag accordingly
    IF TG_OP = 'UPDATE' AND OLD IS DISTINCT FROM NEW THEN
        to_emit := true;
    ELSIF TG_OP = 'DELETE' THEN
        to_emit := true;
    ELSIF TG_OP = 'INSERT' THEN
        to_emit := true;
    ELSIF TG_OP = 'TRUNCATE' THEN
        to_emit := true;
    END IF;

    -- Perform notification if the emit flag is set
    IF to_emit THEN
        PERFORM pg_notify(
            'ue_resync',
            json_build_object(
                'channel', 'ue_resync',
                'operation', lower(TG_OP),
                'sent_at', NOW(),
                'table', TG_TABLE_NAME,
                'type', 'table_changed_event'
            )::text
        );
    END IF;

    -- Return appropriate value based on the operation
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        RETURN OLD;
    ELSE
        RETURN NULL; -- For TRUNCATE and other non-row-specific contexts
    END IF;

END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE TRIGGER tg_pgqueuer_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON resync.pgqueuer
EXECUTE FUNCTION resync.fn_pgqueuer_changed();

-- resync.on_foreign_job: a resync job inserted by another client than ue-resync (`pgq queue
-- resync_course_unit '{{"course_unit_id": 42}}'`, pgqueuer's enqueue from an application, a
-- hand-written INSERT): its UE taken from the payload into resync_unit and the headers, and
-- coalesced like every other event.
-- Called by: pgqueuer_resync_foreign_job, BEFORE INSERT of a row for the resync entrypoint
--   that does not name its UE in resync_unit (resync.enqueue always does: its inserts never
--   call this).
-- Writes: the UE's queued job when it has one (the event absorbed, due no later than this
--   one), and the row is not inserted (the client's INSERT … RETURNING returns no row: pgq
--   reports it as a duplicate); else the row, with its UE filled in. A payload without a
--   readable UE is inserted as it is: the daemon fails it as invalid, with the reason.
CREATE OR REPLACE FUNCTION resync.on_foreign_job() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_payload jsonb := resync.payload_json(NEW.payload);
    v_text    text := coalesce(v_payload ->> 'course_unit_id', NEW.headers ->> 'course_unit_id');
    v_unit    bigint;
    v_reason  text;
    v_job     bigint;
BEGIN
    -- The daemon's own rule for a UE id (jobs.parse_payload): a positive bigint.
    IF v_text !~ '^[1-9][0-9]{{0,18}}$' OR v_text::numeric > 9223372036854775807 THEN
        RETURN NEW;
    END IF;
    v_unit := v_text::bigint;
    v_reason := coalesce(v_payload ->> 'reason', NEW.headers ->> 'reason', 'manual_trigger');
    UPDATE resync.pgqueuer q
    SET execute_after = least(q.execute_after, NEW.execute_after),
        resync_events = q.resync_events + 1,
        resync_last_reason = v_reason
    WHERE q.resync_unit = v_unit AND q.entrypoint = 'resync_course_unit' AND q.status = 'queued'
    RETURNING q.id INTO v_job;
    IF v_job IS NOT NULL THEN
        RETURN NULL;
    END IF;
    NEW.resync_unit := v_unit;
    NEW.resync_last_reason := v_reason;
    NEW.headers := CASE WHEN jsonb_typeof(NEW.headers) = 'object' THEN NEW.headers
                        ELSE '{{}}'::jsonb END  -- pgqueuer's enqueue writes JSON null
                   || jsonb_build_object('course_unit_id', v_unit::text, 'reason', v_reason);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER pgqueuer_resync_foreign_job
    BEFORE INSERT ON resync.pgqueuer
    FOR EACH ROW
    WHEN (NEW.resync_unit IS NULL AND NEW.entrypoint = 'resync_course_unit')
    EXECUTE FUNCTION resync.on_foreign_job();
