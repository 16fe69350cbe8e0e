-- The sync of a UE from its ECUE: what every path that writes the UEs runs but the row path's
-- optimistic write (the element triggers' statement path, resync.sync_now, the daemon through
-- resync.complete_runs). What it writes is the recompute rule (sql/rule.sql), as the row path
-- and the drift write and read it.

-- resync.sync_units: recompute the given UEs from their counted elements.
-- Called by: resync.on_element_statement and resync.on_element_row (inline mode; p_by_job =
--   false, p_only_auto = true), resync.sync_now and resync.complete_runs (p_by_job = true,
--   p_only_auto = false).
-- Writes: the UEs' totals, count and hours_distribution, last_element_sync, and last_job_sync
--   when p_by_job. With p_by_job, returns one row per UE it wrote, with the columns whose value
--   it changed, {{"column": [from, to]}} by the application's names (UEs that do not exist are
--   absent); without it (the triggers), returns nothing and builds no report.
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
    FROM {units} u
    WHERE {u.id} = ANY (p_ids)
      AND (NOT p_only_auto OR {u.auto_sync_enabled})
    ORDER BY {u.id}
    FOR NO KEY UPDATE;

    RETURN QUERY
    WITH
    -- Sums over the elements that count.
    sums AS (
        SELECT {e.course_unit_id} AS id,
               {rule.sums}
        FROM {elements} e
        WHERE {e.course_unit_id} = ANY (p_ids)
          AND {rule.counted}
        GROUP BY {e.course_unit_id}
    ),
    -- What each UE should hold. u is the row as we locked it: no one else can have changed it
    -- since.
    expected AS (
        SELECT x.*, {rule.distribution} AS hours_distribution
        FROM (SELECT {u.id} AS id,
                     {rule.expected},
                     clock_timestamp() AS synced_at  -- taken under the locks, once per UE
              FROM {units} u
              LEFT JOIN sums s ON s.id = {u.id}
              WHERE {u.id} = ANY (p_ids)
                AND (NOT p_only_auto OR {u.auto_sync_enabled})) x
    ),
    -- The write itself.
    written AS (
        UPDATE {units} u
        SET {rule.assign},
            -- The time of this write, under the lock, never older than what is there:
            -- now() is the transaction's start, which a wait for a lock leaves behind.
            {units.last_element_sync} = greatest({u.last_element_sync}, x.synced_at),  -- when units.last_element_sync
            {units.last_job_sync} = CASE WHEN p_by_job
                                         THEN greatest({u.last_job_sync}, x.synced_at)
                                         ELSE {u.last_job_sync} END
        FROM expected x
        WHERE {u.id} = x.id
        RETURNING x.id
    )
    -- The report: the stored row as it was (this statement's snapshot predates its own write)
    -- against what was written. w.id is cast: a Laravel id is integer, RETURN QUERY wants bigint.
    SELECT w.id::bigint, {u.code}::text,
           {rule.differences}
    FROM written w
    JOIN expected x ON x.id = w.id
    JOIN {units} u ON {u.id} = w.id
    CROSS JOIN LATERAL (SELECT {rule.stored}) t
    -- The triggers discard the result: build none. The UPDATE runs all the same (a
    -- data-modifying CTE always runs to completion).
    WHERE p_by_job
    ORDER BY w.id;
END
$$;
