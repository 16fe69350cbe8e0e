-- 0011: coalescing that leaves the job's index entries alone, and a trailing debounce.
--
-- 1. A coalesced event used to rewrite the job's `headers` (the events count) and `updated`,
--    both under indexes of the queue table: every absorbed event wrote a new job version with
--    an entry in each of its five indexes (queued jobs' partial indexes, primary key, ours).
--    What coalescing keeps now lives in columns no index reads, on pages with room to spare,
--    so an absorbed event is a HOT update of the job row (one heap write, no index entry)
--    unless it moves the due time. pgqueuer reads job rows (some with SELECT *) into a model
--    that ignores columns it does not know.
-- 2. Deferred-mode events are debounced on the trailing edge. A change on a quiet UE is due at
--    once, as before (the leading edge: an isolated change is resynced in milliseconds). A
--    change on a busy UE (the daemon holds a job of it, or resynced it less than
--    ue_resync.debounce ago) makes the job due a debounce after it,
--    and so does any change on a job waiting for a debounced due time: a burst of edits
--    gets one resync at its start and one when it quiets down (bench/burst). Bounds: never
--    later than ue_resync.debounce_max_wait after the job's first deferred-mode event, nor
--    later than any other event of the job asked for (a failed sync's policy delay, a
--    request's run_at), and a job already due stays due. 0010's rule (due a debounce after
--    the last resync, earliest due time kept) resynced a UE under a long burst once per
--    debounce period.

-- Section: where coalescing writes

ALTER TABLE resync.pgqueuer
    -- The events this job stands for (1 at insert, + 1 per absorbed event).
    ADD COLUMN IF NOT EXISTS resync_events integer NOT NULL DEFAULT 1,
    -- The reason of its latest event (at insert, the first one's, which headers and payload
    -- keep).
    ADD COLUMN IF NOT EXISTS resync_last_reason text,
    -- Set once the job holds a deferred-mode event: the latest time it may become due.
    -- NULL: its due time is its deadline (only plain events made it).
    ADD COLUMN IF NOT EXISTS resync_deadline timestamptz;

-- Room on each page for the new versions of coalesced jobs (HOT needs the same page).
ALTER TABLE resync.pgqueuer SET (fillfactor = 70);

-- Jobs queued before this migration carried their count in headers.
UPDATE resync.pgqueuer
SET resync_events      = (headers ->> 'events')::integer,
    resync_last_reason = coalesce(headers ->> 'last_reason', headers ->> 'reason'),
    headers            = headers - 'events' - 'last_reason'
WHERE entrypoint = 'resync_course_unit'
  AND status = 'queued'
  AND headers ->> 'events' ~ '^[0-9]{1,9}$';

-- The UEs the daemon holds (picked: waiting for or in their resync), for the debounce.
CREATE INDEX IF NOT EXISTS pgqueuer_resync_picked_per_unit
    ON resync.pgqueuer ((headers ->> 'course_unit_id'))
    WHERE entrypoint = 'resync_course_unit' AND status = 'picked';

-- Section: the one queueing statement

-- resync.queue_jobs (0010's signature and contract, new coalescing and debounce).
-- Every event has a due time and a deadline (the latest it accepts). A plain event (failed
-- inline sync, request, drift sweep, or any event with ue_resync.debounce = '0') is due at
-- now() + p_delay, its deadline that same time (stored as NULL). A deferred-mode event is due
-- now(), or now() + debounce on a busy UE (see above), with the deadline
-- now() + debounce_max_wait. A job keeps the earliest deadline of its events
-- (resync_deadline; NULL while only plain events made it) and is due no later than it.
CREATE OR REPLACE FUNCTION resync.queue_jobs(
    p_units bigint[], p_reasons text[], p_delay interval,
    p_sqlstate text, p_error text, p_deferred_mode boolean
) RETURNS TABLE (course_unit_id bigint, job_id bigint, coalesced boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- One shape whatever the arrays hold (0010: planned at every call without it).
SET plan_cache_mode = force_generic_plan
-- The queue is often empty when a session first plans this (the daemon drains it), and a plan
-- made then may scan the whole table in its lookups: with 10,000 jobs queued, every event
-- read them all (deferred writers 594 tps instead of ~10,000 CPU-only, bench/writer_tps
-- --no-commit-wait). Index lookups whatever the statistics say.
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
            (priority, entrypoint, status, execute_after, payload, headers,
             resync_last_reason, resync_deadline)
        SELECT 0, 'resync_course_unit', 'queued',
               CASE WHEN c.debounced THEN now() + least(v_debounce, v_max_wait)
                    ELSE now() + p_delay END,
               convert_to(jsonb_build_object(
                   'course_unit_id', u.id,
                   'reason',         u.reason,
                   'sqlstate',       p_sqlstate,
                   'error',          left(p_error, 1000),
                   'enqueued_at',    now())::text, 'UTF8'),
               jsonb_build_object('course_unit_id', u.id::text, 'reason', u.reason),
               u.reason,
               CASE WHEN p_deferred_mode AND v_debounce > interval '0' THEN now() + v_max_wait END
        FROM unnest(p_units, p_reasons) AS u(id, reason)
        -- Deferred-mode events only: the UE itself (auto_sync_enabled, busy or not).
        LEFT JOIN LATERAL (
            SELECT cu.auto_sync_enabled,
                   v_debounce > interval '0'
                   AND (cu.last_job_sync > now() - v_debounce
                        -- or a job of it picked: its resync is under way (so an event that
                        -- joins a job queued for later trails too; a new job is checked
                        -- again after the insert, below). A scalar subquery with LIMIT, not
                        -- EXISTS, which the planner may hash over every picked job.
                        OR (SELECT true FROM resync.pgqueuer p
                            WHERE (p.headers ->> 'course_unit_id') = u.id::text
                              AND p.entrypoint = 'resync_course_unit'
                              AND p.status = 'picked'
                            LIMIT 1) IS NOT NULL) AS debounced
            FROM public.course_units cu
            WHERE p_deferred_mode AND cu.id = u.id
        ) c ON true
        WHERE NOT p_deferred_mode OR c.auto_sync_enabled
        ORDER BY u.id  -- one insertion order for every writer: no deadlock on the key
        ON CONFLICT ((headers ->> 'course_unit_id'))
            WHERE entrypoint = 'resync_course_unit' AND status = 'queued'
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
                -- (a plain job's is its due time).
                ELSE least(coalesce(q.resync_deadline, q.execute_after), excluded.resync_deadline,
                           greatest(CASE WHEN q.execute_after < q.resync_deadline
                                         THEN now() + v_debounce END,
                                    excluded.execute_after))
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
        RETURNING (q.headers ->> 'course_unit_id')::bigint AS unit, q.id,
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
    -- way, or about to be) or has just resynced trails that resync. Checked again after the
    -- insert, by a statement of its own, whose snapshot also sees a pick that committed while
    -- the insert waited for the conflicting job (the daemon picked the UE's due job, which
    -- would otherwise have absorbed this event, between the snapshot and the insert).
    -- No status condition on q: the planner would then consider scanning pgqueuer's indexes
    -- of queued jobs whole; the rows are this transaction's own, queued.
    IF v_check IS NOT NULL THEN
        UPDATE resync.pgqueuer q
        SET execute_after = now() + least(v_debounce, v_max_wait)
        WHERE q.id = ANY (v_check)
          AND ((SELECT true FROM resync.pgqueuer p
                WHERE (p.headers ->> 'course_unit_id') = (q.headers ->> 'course_unit_id')
                  AND p.entrypoint = 'resync_course_unit'
                  AND p.status = 'picked'
                LIMIT 1) IS NOT NULL
               -- or picked and resynced since the insert's snapshot
               OR (SELECT c.last_job_sync > now() - v_debounce FROM public.course_units c
                   WHERE c.id = (q.headers ->> 'course_unit_id')::bigint));
    END IF;

    RETURN QUERY SELECT * FROM unnest(v_units, v_ids, v_coalesced);
END
$$;


REVOKE EXECUTE ON FUNCTION resync.queue_jobs(bigint[], text[], interval, text, text, boolean)
FROM PUBLIC;
