-- The sync of a UE from its ECUE: what every path that writes course_units runs (the element
-- triggers' statement path, resync.sync_now, the daemon through resync.complete_runs). The
-- row path's optimistic write (element_triggers.sql) and resync.expected (consistency.sql)
-- compute the same values: keep the three in step.

-- Percentages of the total, one decimal; all zero when there are no hours. STABLE, not
-- IMMUTABLE: jsonb_build_object is STABLE, and the planner inlines an SQL function only when
-- it is declared no stricter than its body.
CREATE OR REPLACE FUNCTION resync.hours_distribution(
    p_cm numeric, p_td numeric, p_tp numeric, p_total numeric
) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN coalesce(p_total, 0) <= 0 THEN '{"cm": 0, "td": 0, "tp": 0}'::jsonb
        ELSE jsonb_build_object(
            'cm', round(coalesce(p_cm, 0) * 100 / p_total, 1),
            'td', round(coalesce(p_td, 0) * 100 / p_total, 1),
            'tp', round(coalesce(p_tp, 0) * 100 / p_total, 1))
    END
$$;

-- resync.sync_units: recompute the given UEs from their active, not soft-deleted ECUE.
-- Called by: resync.on_element_statement and resync.on_element_row (inline mode; p_by_job =
--   false, p_only_auto = true), resync.sync_now and resync.complete_runs (p_by_job = true,
--   p_only_auto = false).
-- Writes: course_units totals, elements_count, hours_distribution, last_element_sync, and
--   last_job_sync when p_by_job. With p_by_job, returns one row per UE it wrote, with what
--   changed as {"column": [from, to]} (UEs that do not exist are absent); without it (the
--   triggers), returns nothing and builds no report.
-- Why: it locks the UE rows first, in id order (no deadlock between two bulk syncs), then reads
--   the elements in a second statement: under READ COMMITTED that statement's snapshot
--   includes every writer that held one of these rows before us. Its statements have one
--   shape whatever the array holds, so a generic plan serves most calls (planning would
--   otherwise dominate a single-row write); from 2,000 UEs on, a plan made for the actual
--   array (hash joins) beats the generic one's index lookups, and the daemon's batches
--   (1,000 UEs at most) never get there.
CREATE OR REPLACE FUNCTION resync.sync_units(
    p_ids bigint[], p_by_job boolean, p_only_auto boolean
) RETURNS TABLE (course_unit_id bigint, code text, changes jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- The SET clause puts plan_cache_mode back on return.
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
