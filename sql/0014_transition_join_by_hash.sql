-- 0014: the statement path joins the UPDATE's transition tables by hash.
--
-- A bulk UPDATE's statement trigger pairs each old row with its new one (old_rows JOIN
-- new_rows ON id). Transition tables have no statistics: the planner assumes 200 distinct ids,
-- prices a hash join of 40,000 rows as 200-row bucket chains, and sorted both tables for a
-- merge join instead (work_mem 4MB: both sorts spilled to disk). By hash, with every id
-- distinct, the read takes ~118 ms instead of ~150-170 ms for 40,000 rows on 10,000 UEs
-- (PostgreSQL 15, EXPLAIN ANALYZE of the same query over two copies of the table; the hash
-- table fits in work_mem). enable_mergejoin is switched off for that one query only, after the
-- single-row early return (a SET clause on the function would cost every single-row statement
-- a setting) and put back after it; an error on the way ends the (sub)transaction, which
-- restores it. Nothing else the trigger runs changes plan: sync_units' merge join of two
-- index scans is the right one.
--
-- The rest of the function is 0010's, with 0012's SET jit = off in its SET list.

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
        -- when it moved, its old one. By hash: see the head of this file.
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
