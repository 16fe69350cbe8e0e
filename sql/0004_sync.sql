-- 0004: the sync of a UE from its ECUE, the deferred-job queueing, and the triggers.
--
-- Settings read by the trigger (per session, role or database, e.g.
-- `ALTER DATABASE app SET ue_resync.lock_timeout = '250ms'`):
--   ue_resync.mode          inline (default) | deferred | off
--   ue_resync.lock_timeout  how long a writer waits for its UE row before deferring (default
--                           100ms; '0' means no limit, as for lock_timeout itself)

-- Section: pure helpers

-- Percentages of the total, one decimal; all zero when there are no hours.
CREATE OR REPLACE FUNCTION resync.hours_distribution(
    p_cm numeric, p_td numeric, p_tp numeric, p_total numeric
) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN coalesce(p_total, 0) <= 0 THEN '{"cm": 0, "td": 0, "tp": 0}'::jsonb
        ELSE jsonb_build_object(
            'cm', round(coalesce(p_cm, 0) * 100 / p_total, 1),
            'td', round(coalesce(p_td, 0) * 100 / p_total, 1),
            'tp', round(coalesce(p_tp, 0) * 100 / p_total, 1))
    END
$$;

-- The policy row for a SQLSTATE: exact code, then class, then the catch-all ''.
-- With no catch-all row left, a failure still queues: sync_error after 2 minutes.
CREATE OR REPLACE FUNCTION resync.policy_for(p_sqlstate text)
RETURNS TABLE (reason_prefix text, delay interval, auto_resync boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM (
        SELECT p.reason_prefix, p.delay, p.auto_resync
        FROM resync.error_policy p
        WHERE p_sqlstate LIKE p.sqlstate_pattern || '%'
        ORDER BY length(p.sqlstate_pattern) DESC
        LIMIT 1
    ) found
    UNION ALL
    SELECT 'sync_error', interval '2 minutes', true
    WHERE NOT EXISTS (SELECT 1 FROM resync.error_policy p
                      WHERE p_sqlstate LIKE p.sqlstate_pattern || '%')
$$;

-- Section: the sync

-- resync.sync_units: recompute the given UEs from their active, not soft-deleted ECUE.
-- Called by: the element triggers (inline mode, p_by_job = false, p_only_auto = true),
--   resync.sync_now and the daemon (p_by_job = true, p_only_auto = false).
-- Writes: course_units totals, elements_count, hours_distribution, last_element_sync,
--   and last_job_sync when p_by_job. With p_by_job, returns one row per UE it wrote, with
--   what changed as {"column": [from, to]} (UEs that do not exist are absent); without it
--   (the triggers), returns nothing and builds no report.
-- Locks the UE rows first, in id order (no deadlock between two bulk syncs), then reads
-- the elements in a second statement: under READ COMMITTED that statement's snapshot
-- includes every writer that held one of these rows before us.
CREATE OR REPLACE FUNCTION resync.sync_units(
    p_ids bigint[], p_by_job boolean, p_only_auto boolean
) RETURNS TABLE (course_unit_id bigint, code text, changes jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- PL/pgSQL kept choosing custom plans for the array parameter: planning was ~60 % of a
-- single-row element update (bench/writer_tps). The statements have one shape whatever the
-- array holds, so a generic plan is right for every size.
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM 1
    FROM public.course_units u
    WHERE u.id = ANY (p_ids)
      AND (NOT p_only_auto OR u.auto_sync_enabled)
    ORDER BY u.id
    FOR NO KEY UPDATE;

    RETURN QUERY
    WITH
    -- Sums over the elements that count: active and not soft-deleted.
    sums AS (
        SELECT e.course_unit_id AS id,
               sum(coalesce(e.credits::numeric, 0))     AS credits,
               sum(coalesce(e.hours_cm::numeric, 0))    AS hours_cm,
               sum(coalesce(e.hours_td::numeric, 0))    AS hours_td,
               sum(coalesce(e.hours_tp::numeric, 0))    AS hours_tp,
               sum(coalesce(e.hours_total::numeric, 0)) AS hours_total,
               count(*)::integer                        AS n
        FROM public.course_unit_elements e
        WHERE e.course_unit_id = ANY (p_ids)
          AND e.status = 'active'
          AND e.deleted_at IS NULL
        GROUP BY e.course_unit_id
    ),
    -- What each UE should hold, honouring its two sync flags. `old` is the row as we
    -- locked it: no one else can have changed it since.
    expected AS (
        SELECT old.id,
               CASE WHEN old.sync_credits_with_elements
                    THEN coalesce(s.credits, 0) ELSE old.credits::numeric END     AS credits,
               CASE WHEN old.sync_hours_with_elements
                    THEN coalesce(s.hours_cm, 0) ELSE old.hours_cm::numeric END   AS hours_cm,
               CASE WHEN old.sync_hours_with_elements
                    THEN coalesce(s.hours_td, 0) ELSE old.hours_td::numeric END   AS hours_td,
               CASE WHEN old.sync_hours_with_elements
                    THEN coalesce(s.hours_tp, 0) ELSE old.hours_tp::numeric END   AS hours_tp,
               CASE WHEN old.sync_hours_with_elements
                    THEN coalesce(s.hours_total, 0) ELSE old.hours_total::numeric END AS hours_total,
               coalesce(s.n, 0) AS elements_count,
               clock_timestamp() AS synced_at  -- taken under the locks, once per UE
        FROM public.course_units old
        LEFT JOIN sums s ON s.id = old.id
        WHERE old.id = ANY (p_ids)
          AND (NOT p_only_auto OR old.auto_sync_enabled)
    ),
    -- The write itself; RETURNING pairs the new values with the old row of the FROM list.
    written AS (
        UPDATE public.course_units u
        SET credits            = x.credits,
            hours_cm           = x.hours_cm,
            hours_td           = x.hours_td,
            hours_tp           = x.hours_tp,
            hours_total        = x.hours_total,
            elements_count     = x.elements_count,
            hours_distribution = resync.hours_distribution(
                                     x.hours_cm, x.hours_td, x.hours_tp, x.hours_total),
            -- The time of this write, under the lock, never older than what is there:
            -- now() is the transaction's start, which a wait for a lock leaves behind.
            last_element_sync  = greatest(u.last_element_sync, x.synced_at),
            last_job_sync      = CASE WHEN p_by_job
                                      THEN greatest(u.last_job_sync, x.synced_at)
                                      ELSE u.last_job_sync END
        FROM expected x
        JOIN public.course_units old ON old.id = x.id
        WHERE u.id = x.id
        RETURNING u.id, u.code::text,
            CASE WHEN p_by_job THEN jsonb_build_object(
                'credits',            jsonb_build_array(old.credits, u.credits),
                'hours_cm',           jsonb_build_array(old.hours_cm, u.hours_cm),
                'hours_td',           jsonb_build_array(old.hours_td, u.hours_td),
                'hours_tp',           jsonb_build_array(old.hours_tp, u.hours_tp),
                'hours_total',        jsonb_build_array(old.hours_total, u.hours_total),
                'elements_count',     jsonb_build_array(old.elements_count, u.elements_count),
                'hours_distribution', jsonb_build_array(old.hours_distribution::jsonb,
                                                        u.hours_distribution::jsonb)
            ) END AS pairs
    )
    -- Keep only the columns whose value moved (numeric 6 and 6.00 are the same value).
    -- w.id is cast: a Laravel course_units.id is integer, and RETURN QUERY wants bigint.
    SELECT w.id::bigint, w.code,
           coalesce((SELECT jsonb_object_agg(p.key, p.value)
                     FROM jsonb_each(w.pairs) p
                     WHERE p.value -> 0 IS DISTINCT FROM p.value -> 1), '{}'::jsonb)
    FROM written w
    -- The triggers discard the result: build none. The UPDATE runs all the same (a
    -- data-modifying CTE always runs to completion).
    WHERE p_by_job
    ORDER BY w.id;
END
$$;

-- Section: deferred jobs

-- One queued job per UE at most: the key the coalescing INSERT … ON CONFLICT infers.
-- pgqueuer's own dedupe_key index also covers picked jobs, so it would swallow an event
-- that arrives while the UE's resync runs; this one covers queued jobs only.
CREATE UNIQUE INDEX IF NOT EXISTS pgqueuer_resync_one_queued_per_unit
    ON resync.pgqueuer ((headers ->> 'course_unit_id'))
    WHERE entrypoint = 'resync_course_unit' AND status = 'queued';

-- resync.enqueue: queue a resync of each UE, coalesced.
-- Called by: the element triggers (failed inline sync, deferred mode), resync.requests,
--   resync.enqueue_drifted. p_units must be distinct; p_reasons is aligned with it.
-- Writes: resync.pgqueuer. A UE that already has a queued job keeps that job: the
--   earliest execute_after wins and headers.events counts the absorbed events. A job
--   already picked absorbs nothing, so a change during a running resync gets its own job.
--   pgqueuer's statement trigger NOTIFYs the workers when the caller commits.
CREATE OR REPLACE FUNCTION resync.enqueue(
    p_units bigint[], p_reasons text[], p_delay interval,
    p_sqlstate text DEFAULT NULL, p_error text DEFAULT NULL
) RETURNS TABLE (course_unit_id bigint, job_id bigint, coalesced boolean)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO resync.pgqueuer AS q
        (priority, entrypoint, status, execute_after, payload, headers)
    SELECT 0, 'resync_course_unit', 'queued', now() + p_delay,
           convert_to(jsonb_build_object(
               'course_unit_id', u.id,
               'reason',         u.reason,
               'sqlstate',       p_sqlstate,
               'error',          left(p_error, 1000),
               'enqueued_at',    now())::text, 'UTF8'),
           jsonb_build_object('course_unit_id', u.id::text, 'reason', u.reason, 'events', 1)
    FROM unnest(p_units, p_reasons) AS u(id, reason)
    ORDER BY u.id  -- one insertion order for every writer: no deadlock on the key
    ON CONFLICT ((headers ->> 'course_unit_id'))
        WHERE entrypoint = 'resync_course_unit' AND status = 'queued'
    DO UPDATE SET
        execute_after = least(q.execute_after, excluded.execute_after),
        updated       = now(),
        headers       = q.headers || jsonb_build_object(
            'events', CASE WHEN q.headers ->> 'events' ~ '^[0-9]{1,9}$'
                           THEN (q.headers ->> 'events')::integer + 1 ELSE 2 END,
            'last_reason', excluded.headers ->> 'reason')
    RETURNING (q.headers ->> 'course_unit_id')::bigint, q.id, (q.xmax <> 0)
$$;

-- Section: the triggers on course_unit_elements

-- resync.on_elements_changed: statement-level AFTER trigger for INSERT, UPDATE, DELETE.
-- Fires once per statement with its transition tables, so a bulk statement syncs each
-- affected UE once. Collects the UEs touched (both of them for a move), drops those with
-- auto_sync_enabled = false, then by ue_resync.mode:
--   inline   sync them now, waiting at most ue_resync.lock_timeout for their rows; on any
--            error the subtransaction rolls back, the writer's statement goes on, and the
--            error policy decides the job (reason <prefix>_after_<action>) and its delay.
--   deferred queue a job per UE due now (reason deferred_after_<action>).
--   off      nothing; `resync.enqueue_drifted()` catches up later.
-- Writes: course_units (inline), resync.pgqueuer and resync.sync_failures (on failure).
CREATE OR REPLACE FUNCTION resync.on_elements_changed() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode     text := coalesce(nullif(current_setting('ue_resync.mode', true), ''), 'inline');
    v_wait     text := coalesce(nullif(current_setting('ue_resync.lock_timeout', true), ''), '100ms');
    v_saved    text;
    v_units    bigint[];
    v_actions  text[];
    v_reasons  text[];
    v_jobs     bigint[];
    v_state    text;
    v_message  text;
    v_policy   record;
BEGIN
    IF v_mode = 'off' THEN
        RETURN NULL;
    ELSIF v_mode NOT IN ('inline', 'deferred') THEN
        RAISE EXCEPTION 'invalid value for ue_resync.mode: "%"', v_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use inline, deferred or off.';
    END IF;

    -- One (UE, action) per UE. An UPDATE only counts rows whose counted fields moved;
    -- a row that is both moved and soft-deleted is reported by its most telling action.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(t.unit ORDER BY t.unit), array_agg('created'::text ORDER BY t.unit)
        INTO v_units, v_actions
        FROM (SELECT DISTINCT n.course_unit_id::bigint AS unit
              FROM new_rows n JOIN public.course_units u ON u.id = n.course_unit_id
              WHERE u.auto_sync_enabled) t;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(t.unit ORDER BY t.unit), array_agg('force_deleted'::text ORDER BY t.unit)
        INTO v_units, v_actions
        FROM (SELECT DISTINCT o.course_unit_id::bigint AS unit
              FROM old_rows o JOIN public.course_units u ON u.id = o.course_unit_id
              WHERE u.auto_sync_enabled) t;
    ELSE
        -- The transition tables are joined once; each changed row names its new UE and,
        -- when it moved, its old one.
        WITH changed AS MATERIALIZED (
            SELECT o.course_unit_id::bigint AS old_unit, n.course_unit_id::bigint AS new_unit,
                   CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN 1
                        WHEN o.deleted_at IS NOT NULL AND n.deleted_at IS NULL THEN 2
                        ELSE 3 END AS rank
            FROM old_rows o
            JOIN new_rows n ON n.id = o.id
            WHERE (o.credits, o.hours_cm, o.hours_td, o.hours_tp, o.hours_total,
                   o.status, o.deleted_at, o.course_unit_id)
                  IS DISTINCT FROM
                  (n.credits, n.hours_cm, n.hours_td, n.hours_tp, n.hours_total,
                   n.status, n.deleted_at, n.course_unit_id)
        ), per_unit AS (
            SELECT c.unit, (array['deleted', 'restored', 'updated'])[min(c.rank)] AS action
            FROM (SELECT new_unit AS unit, rank FROM changed WHERE new_unit IS NOT NULL
                  UNION ALL
                  SELECT old_unit, rank FROM changed
                  WHERE old_unit IS NOT NULL AND old_unit IS DISTINCT FROM new_unit) c
            GROUP BY c.unit
        )
        SELECT array_agg(p.unit ORDER BY p.unit), array_agg(p.action ORDER BY p.unit)
        INTO v_units, v_actions
        FROM per_unit p
        JOIN public.course_units u ON u.id = p.unit
        WHERE u.auto_sync_enabled;
    END IF;

    IF v_units IS NULL THEN
        RETURN NULL;
    END IF;

    IF v_mode = 'deferred' THEN
        PERFORM resync.enqueue(
            v_units,
            array(SELECT 'deferred_after_' || a FROM unnest(v_actions) a),
            interval '0');
        RETURN NULL;
    END IF;

    -- Set outside the block, so a malformed ue_resync.lock_timeout is the writer's error
    -- ("invalid value for parameter lock_timeout") rather than a silent deferral; restored
    -- after it either way.
    v_saved := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout', v_wait, true);
    BEGIN
        PERFORM resync.sync_units(v_units, false, true);
    EXCEPTION
        -- OTHERS does not include query_canceled: a statement_timeout must defer too.
        WHEN query_canceled THEN
            v_state := SQLSTATE; v_message := SQLERRM;
        WHEN OTHERS THEN
            v_state := SQLSTATE; v_message := SQLERRM;
    END;
    PERFORM set_config('lock_timeout', v_saved, true);

    IF v_state IS NULL THEN
        RETURN NULL;
    END IF;

    SELECT * INTO v_policy FROM resync.policy_for(v_state);
    v_reasons := array(SELECT v_policy.reason_prefix || '_after_' || a.action
                       FROM unnest(v_actions) WITH ORDINALITY AS a(action, i) ORDER BY a.i);
    IF v_policy.auto_resync THEN
        SELECT array_agg(e.job_id ORDER BY e.course_unit_id) INTO v_jobs
        FROM resync.enqueue(v_units, v_reasons, v_policy.delay, v_state, v_message) e;
    END IF;

    INSERT INTO resync.sync_failures (course_unit_id, action, reason, sqlstate, error, job_id)
    SELECT f.unit, f.action, f.reason, v_state, v_message, f.job
    FROM unnest(v_units, v_actions, v_reasons, v_jobs) AS f(unit, action, reason, job);

    RAISE WARNING 'ue-resync: sync of % course unit(s) failed (%: %); %', cardinality(v_units),
        v_state, v_message,
        CASE WHEN v_policy.auto_resync
             THEN 'resync queued in ' || v_policy.delay::text
             ELSE 'no automatic resync (resync.error_policy)' END;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER course_unit_elements_resync_insert
    AFTER INSERT ON public.course_unit_elements
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resync.on_elements_changed();

CREATE OR REPLACE TRIGGER course_unit_elements_resync_update
    AFTER UPDATE ON public.course_unit_elements
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resync.on_elements_changed();

CREATE OR REPLACE TRIGGER course_unit_elements_resync_delete
    AFTER DELETE ON public.course_unit_elements
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resync.on_elements_changed();
