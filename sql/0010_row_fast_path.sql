-- 0010: single-row statements take a row-level fast path.
--
-- Most writes an application makes change one element per statement. The statement-level
-- triggers of 0004 pay, for each of them, 15–60 µs per query that reads a transition table
-- (they behave as if planned at every call) and a set-based sync built for thousands of UEs:
-- ~190 µs per single-row UPDATE here, against ~40 µs for the UPDATE itself
-- (bench/writer_tps). A row trigger reads OLD and NEW for free, and its queries keep their
-- plans. A statement takes one path or the other, never both:
--
--   course_unit_elements_resync_row   AFTER ROW. Its WHEN clause, evaluated as each row is
--       written, counts the statement's rows in the transaction-local setting
--       ue_resync.statement_rows ('<statement timestamp> 1', then ' 2') and queues the event
--       of the first row only; from the third row on it only compares a string, with no
--       function call. When the event fires (end of statement) and the count still reads 1,
--       the function syncs or queues that row's UE and marks the statement ' done'.
--   course_unit_elements_resync_insert/update/delete (0004), AFTER STATEMENT: return at once
--       when the statement is ' done', else do what they always did, from the transition
--       tables.
--
-- Anything unexpected falls to the statement path, which is always right: statements inside
-- one function share a statement_timestamp (after a ' done' the next one counts afresh;
-- after a ' 2' every later one takes the statement path); a statement nested in another's
-- row processing pushes the shared count to 2; a row moved between UEs is handed over; with
-- the row trigger disabled nothing is ever marked ' done'. Disable the four triggers together or not
-- at all (bench/common.py does).

-- Section: shared by both paths

-- resync.hours_distribution was declared IMMUTABLE, but jsonb_build_object is only STABLE:
-- the planner refuses to inline an IMMUTABLE SQL function whose body is less than that, so
-- every sync and every row of resync.drift called it through the SQL-function executor
-- (~10 µs a call). STABLE is its true class, and lets it inline.
ALTER FUNCTION resync.hours_distribution(numeric, numeric, numeric, numeric) STABLE;

-- resync.queue_jobs: resync.enqueue's statement, in PL/pgSQL (a SQL function that cannot be
-- inlined, being SECURITY DEFINER, is planned again at every call from a trigger; PL/pgSQL
-- keeps the plan), with one more argument. p_deferred_mode marks the events of
-- ue_resync.mode = 'deferred', from either trigger path: UEs with auto_sync_enabled = false are
-- skipped, and a UE the daemon resynced less than ue_resync.debounce ago (default 2s, '0' =
-- off) is due when that time is up, so a burst of edits on one UE is resynced once per period,
-- not once per pickup. Coalescing is unchanged (the earliest due time wins); an isolated change
-- is due at once. The two lookups of the UE run only for deferred-mode events.
-- A new name rather than a new signature for resync.enqueue: re-running 0004 (every file is
-- re-runnable) would otherwise leave two overloads that its callers cannot choose between.
CREATE OR REPLACE FUNCTION resync.queue_jobs(
    p_units bigint[], p_reasons text[], p_delay interval,
    p_sqlstate text, p_error text, p_deferred_mode boolean
) RETURNS TABLE (course_unit_id bigint, job_id bigint, coalesced boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- One shape whatever the arrays hold; without this PL/pgSQL kept planning it at every call
-- (deferred single-row writers 0.12× instead of 0.20× CPU-only, bench/writer_tps).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_debounce interval;
BEGIN
    IF p_deferred_mode THEN
        -- The writer's setting; malformed, it is the writer's error.
        v_debounce := coalesce(nullif(current_setting('ue_resync.debounce', true), ''),
                               '2s')::interval;
    END IF;
    RETURN QUERY
    INSERT INTO resync.pgqueuer AS q
        (priority, entrypoint, status, execute_after, payload, headers)
    SELECT 0, 'resync_course_unit', 'queued',
           greatest(now() + p_delay,
                    CASE WHEN p_deferred_mode
                         THEN (SELECT c.last_job_sync FROM public.course_units c
                               WHERE c.id = u.id) + v_debounce END),
           convert_to(jsonb_build_object(
               'course_unit_id', u.id,
               'reason',         u.reason,
               'sqlstate',       p_sqlstate,
               'error',          left(p_error, 1000),
               'enqueued_at',    now())::text, 'UTF8'),
           jsonb_build_object('course_unit_id', u.id::text, 'reason', u.reason, 'events', 1)
    FROM unnest(p_units, p_reasons) AS u(id, reason)
    WHERE NOT p_deferred_mode
       OR EXISTS (SELECT 1 FROM public.course_units c
                  WHERE c.id = u.id AND c.auto_sync_enabled)
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
    RETURNING (q.headers ->> 'course_unit_id')::bigint, q.id, (q.xmax <> 0);
END
$$;

-- resync.enqueue (0004's contract, unchanged): resync.queue_jobs for anything but a
-- deferred-mode event.
CREATE OR REPLACE FUNCTION resync.enqueue(
    p_units bigint[], p_reasons text[], p_delay interval,
    p_sqlstate text DEFAULT NULL, p_error text DEFAULT NULL
) RETURNS TABLE (course_unit_id bigint, job_id bigint, coalesced boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM resync.queue_jobs(p_units, p_reasons, p_delay, p_sqlstate, p_error, false);
END
$$;

-- resync.record_sync_failure: after a failed inline sync (its subtransaction rolled back),
-- the error policy decides: a job after its delay (reason '<prefix>_after_<action>'), or
-- nothing; either way one resync.sync_failures row per UE and one WARNING for the writer.
CREATE OR REPLACE FUNCTION resync.record_sync_failure(
    p_units bigint[], p_actions text[], p_sqlstate text, p_error text
) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_units   bigint[];
    v_actions text[];
    v_reasons text[];
    v_jobs    bigint[];
    v_policy  record;
BEGIN
    SELECT array_agg(a.unit ORDER BY a.unit), array_agg(a.action ORDER BY a.unit)
    INTO v_units, v_actions
    FROM unnest(p_units, p_actions) AS a(unit, action)
    JOIN public.course_units u ON u.id = a.unit
    WHERE u.auto_sync_enabled;
    IF v_units IS NULL THEN
        RETURN;
    END IF;

    SELECT * INTO v_policy FROM resync.policy_for(p_sqlstate);
    v_reasons := array(SELECT v_policy.reason_prefix || '_after_' || a.action
                       FROM unnest(v_actions) WITH ORDINALITY AS a(action, i) ORDER BY a.i);
    IF v_policy.auto_resync THEN
        SELECT array_agg(e.job_id ORDER BY e.course_unit_id) INTO v_jobs
        FROM resync.enqueue(v_units, v_reasons, v_policy.delay, p_sqlstate, p_error) e;
    END IF;

    INSERT INTO resync.sync_failures (course_unit_id, action, reason, sqlstate, error, job_id)
    SELECT f.unit, f.action, f.reason, p_sqlstate, p_error, f.job
    FROM unnest(v_units, v_actions, v_reasons, v_jobs) AS f(unit, action, reason, job);

    RAISE WARNING 'ue-resync: sync of % course unit(s) failed (%: %); %', cardinality(v_units),
        p_sqlstate, p_error,
        CASE WHEN v_policy.auto_resync
             THEN 'resync queued in ' || v_policy.delay::text
             ELSE 'no automatic resync (resync.error_policy)' END;
END
$$;

-- Section: the statement path (0004's trigger function, with the early return and the helper)

CREATE OR REPLACE FUNCTION resync.on_elements_changed() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode     text;
    v_wait     text;
    v_saved    text;
    v_units    bigint[];
    v_actions  text[];
    v_state    text;
    v_message  text;
BEGIN
    -- A statement that changed one row: resync.on_element_row_changed has handled it.
    -- Tested first: this is all a single-row statement pays here.
    IF current_setting('ue_resync.statement_rows', true)
       = encode(timestamptz_send(statement_timestamp()), 'hex') || ' done' THEN
        RETURN NULL;
    END IF;
    v_mode := coalesce(nullif(current_setting('ue_resync.mode', true), ''), 'inline');
    v_wait := coalesce(nullif(current_setting('ue_resync.lock_timeout', true), ''), '100ms');
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
        PERFORM resync.queue_jobs(
            v_units,
            array(SELECT 'deferred_after_' || a FROM unnest(v_actions) a),
            interval '0', NULL, NULL, true);
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

    PERFORM resync.record_sync_failure(v_units, v_actions, v_state, v_message);
    RETURN NULL;
END
$$;

-- Section: the row path

-- resync.on_element_row_changed: AFTER ROW, for a statement that changed one row. Does what
-- resync.on_elements_changed does for that row, then marks the statement ' done'.
-- Inline, optimistically in one statement: the UE's sums with the UE row's xmin as this
-- statement's snapshot sees them, written only if the row is still that version. When
-- another sync changed the row since (one committed, or one we waited for), our sums may miss
-- that writer's elements: nothing is written, and resync.sync_units (lock first, then read)
-- does it.
-- Keep the values it writes in step with resync.sync_units (0004) and resync.expected (0006).
CREATE OR REPLACE FUNCTION resync.on_element_row_changed() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_statement text := encode(timestamptz_send(statement_timestamp()), 'hex');
    v_mode      text;
    v_unit      bigint;
    v_action    text;
    v_saved     text;
    v_set       text;
    v_state     text;
    v_message   text;
BEGIN
    -- More rows came after this one: the statement trigger syncs them all.
    IF current_setting('ue_resync.statement_rows', true) IS DISTINCT FROM v_statement || ' 1' THEN
        RETURN NULL;
    END IF;

    IF TG_OP = 'INSERT' THEN
        v_unit := NEW.course_unit_id;
        v_action := 'created';
    ELSIF TG_OP = 'DELETE' THEN
        v_unit := OLD.course_unit_id;
        v_action := 'force_deleted';
    ELSIF (OLD.credits, OLD.hours_cm, OLD.hours_td, OLD.hours_tp, OLD.hours_total,
           OLD.status, OLD.deleted_at, OLD.course_unit_id)
          IS NOT DISTINCT FROM
          (NEW.credits, NEW.hours_cm, NEW.hours_td, NEW.hours_tp, NEW.hours_total,
           NEW.status, NEW.deleted_at, NEW.course_unit_id) THEN
        v_unit := NULL;  -- nothing counted changed
    ELSIF OLD.course_unit_id IS DISTINCT FROM NEW.course_unit_id THEN
        -- A move touches two UEs: left to the statement trigger.
        v_set := set_config('ue_resync.statement_rows', v_statement || ' 2', true);
        RETURN NULL;
    ELSE
        v_unit := NEW.course_unit_id;
        v_action := CASE WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN 'deleted'
                         WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN 'restored'
                         ELSE 'updated' END;
    END IF;
    v_set := set_config('ue_resync.statement_rows', v_statement || ' done', true);
    IF v_unit IS NULL THEN
        RETURN NULL;
    END IF;

    v_mode := coalesce(nullif(current_setting('ue_resync.mode', true), ''), 'inline');
    IF v_mode = 'off' THEN
        RETURN NULL;
    ELSIF v_mode = 'deferred' THEN
        PERFORM resync.queue_jobs(array[v_unit], array['deferred_after_' || v_action],
                                  interval '0', NULL, NULL, true);
        RETURN NULL;
    ELSIF v_mode <> 'inline' THEN
        RAISE EXCEPTION 'invalid value for ue_resync.mode: "%"', v_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use inline, deferred or off.';
    END IF;

    v_saved := current_setting('lock_timeout');
    v_set := set_config('lock_timeout',
        coalesce(nullif(current_setting('ue_resync.lock_timeout', true), ''), '100ms'), true);
    BEGIN
        -- x is the UE row as this statement's snapshot sees it, with its sums; u is the
        -- row the UPDATE locks. They are the same version unless another transaction
        -- updated the row since: then u is that newer version (read committed re-checks
        -- the WHERE on it) and nothing is written.
        UPDATE public.course_units u
        SET credits            = CASE WHEN u.sync_credits_with_elements
                                      THEN x.credits ELSE u.credits END,
            hours_cm           = CASE WHEN u.sync_hours_with_elements
                                      THEN x.cm ELSE u.hours_cm END,
            hours_td           = CASE WHEN u.sync_hours_with_elements
                                      THEN x.td ELSE u.hours_td END,
            hours_tp           = CASE WHEN u.sync_hours_with_elements
                                      THEN x.tp ELSE u.hours_tp END,
            hours_total        = CASE WHEN u.sync_hours_with_elements
                                      THEN x.total ELSE u.hours_total END,
            elements_count     = x.n,
            hours_distribution = CASE WHEN u.sync_hours_with_elements
                                      THEN resync.hours_distribution(x.cm, x.td, x.tp, x.total)
                                      ELSE resync.hours_distribution(u.hours_cm, u.hours_td,
                                                                     u.hours_tp, u.hours_total) END,
            last_element_sync  = greatest(u.last_element_sync, clock_timestamp())
        FROM (SELECT seen.xmin AS seen, s.*
              FROM public.course_units seen
              CROSS JOIN LATERAL (
                  SELECT coalesce(sum(e.credits::numeric), 0)     AS credits,
                         coalesce(sum(e.hours_cm::numeric), 0)    AS cm,
                         coalesce(sum(e.hours_td::numeric), 0)    AS td,
                         coalesce(sum(e.hours_tp::numeric), 0)    AS tp,
                         coalesce(sum(e.hours_total::numeric), 0) AS total,
                         count(*)::integer                        AS n
                  FROM public.course_unit_elements e
                  WHERE e.course_unit_id = seen.id
                    AND e.status = 'active'
                    AND e.deleted_at IS NULL) s
              WHERE seen.id = v_unit) x
        WHERE u.id = v_unit
          AND u.auto_sync_enabled
          AND u.xmin = x.seen;
        -- Not written: the row moved on, or the UE is gone or not synced automatically
        -- (resync.sync_units skips those as well).
        IF NOT FOUND THEN
            PERFORM resync.sync_units(array[v_unit], false, true);
        END IF;
    EXCEPTION
        -- OTHERS does not include query_canceled: a statement_timeout must defer too.
        WHEN query_canceled THEN
            v_state := SQLSTATE; v_message := SQLERRM;
        WHEN OTHERS THEN
            v_state := SQLSTATE; v_message := SQLERRM;
    END;
    v_set := set_config('lock_timeout', v_saved, true);

    IF v_state IS NOT NULL THEN
        PERFORM resync.record_sync_failure(array[v_unit], array[v_action], v_state, v_message);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER course_unit_elements_resync_row
    AFTER INSERT OR UPDATE OR DELETE ON public.course_unit_elements
    FOR EACH ROW
    -- Evaluated as each row is written (the function runs at the end of the statement):
    -- counts the statement's rows in the setting, queues the event for the first only.
    WHEN (CASE current_setting('ue_resync.statement_rows', true)
          WHEN encode(timestamptz_send(statement_timestamp()), 'hex') || ' 2' THEN false
          WHEN encode(timestamptz_send(statement_timestamp()), 'hex') || ' 1'
          THEN set_config('ue_resync.statement_rows',
                          encode(timestamptz_send(statement_timestamp()), 'hex') || ' 2',
                          true) IS NULL
          ELSE set_config('ue_resync.statement_rows',
                          encode(timestamptz_send(statement_timestamp()), 'hex') || ' 1',
                          true) IS NOT NULL
          END)
    EXECUTE FUNCTION resync.on_element_row_changed();

REVOKE EXECUTE ON FUNCTION
    resync.queue_jobs(bigint[], text[], interval, text, text, boolean),
    resync.record_sync_failure(bigint[], text[], text, text),
    resync.on_element_row_changed()
FROM PUBLIC;
