-- 0014: plans for bulk statements.
--
-- 1. The statement path joins an UPDATE's transition tables by hash. A bulk UPDATE's
--    statement trigger pairs each old row with its new one (old_rows JOIN new_rows ON id).
--    Transition tables have no statistics: the planner assumes 200 distinct ids, prices a hash
--    join as 200-row bucket chains, and from about 1,000 rows on sorted both tables for a merge
--    join instead (work_mem 4MB: at 40,000 rows both sorts spilled to disk). By hash, every id
--    being distinct, the read takes ~118 ms instead of ~150-170 ms for 40,000 rows on 10,000
--    UEs (PostgreSQL 15, EXPLAIN ANALYZE of the same query over two copies of the table; the
--    hash table fits in work_mem). enable_mergejoin is switched off for that one query only,
--    after the single-row early return (a SET clause on the function would cost every
--    single-row statement a setting), and put back after it; an error on the way ends the
--    (sub)transaction, which restores it.
-- 2. resync.sync_units plans a call for 2,000 UEs or more with its actual array. Its generic
--    plan (0004: planning was most of a single-row write then) estimates 10 UEs and looks each
--    one up by index, three times: for 10,000 UEs, 400 ms where a plan made for them (hash
--    joins over sequential scans) takes 240 ms. Calls for fewer UEs keep the generic plan:
--    planning costs more than it saves up to ~1,500 UEs (PostgreSQL 15, 4 elements per UE,
--    sync_units called directly: generic 38-40 ms / custom 41-42 ms for 1,000 UEs, 111-117 / 97-100
--    for 3,000). The daemon's batches (at most 1,000 UEs) never reach it. The SET clause
--    restores plan_cache_mode on return.
--
-- The bodies are otherwise 0010's and 0004's; on_elements_changed keeps 0012's jit = off.

-- Section: the statement path

CREATE OR REPLACE FUNCTION resync.on_elements_changed() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- 0012: no JIT compilation of what it runs (a CREATE OR REPLACE resets the SET list).
SET jit = off
AS $$
DECLARE
    v_mode     text;
    v_wait     text;
    v_saved    text;
    v_units    bigint[];
    v_actions  text[];
    v_state    text;
    v_message  text;
    v_joins    text;
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
        -- when it moved, its old one. By hash: see 1. above.
        v_joins := current_setting('enable_mergejoin');
        PERFORM set_config('enable_mergejoin', 'off', true);
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
        PERFORM set_config('enable_mergejoin', v_joins, true);
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

REVOKE EXECUTE ON FUNCTION resync.on_elements_changed() FROM PUBLIC;

-- Section: resync.sync_units

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
    -- See 2. above; the SET clause puts the setting back on return.
    IF cardinality(p_ids) >= 2000 THEN
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;

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

REVOKE EXECUTE ON FUNCTION resync.sync_units(bigint[], boolean, boolean) FROM PUBLIC;
