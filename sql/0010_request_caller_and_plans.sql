-- 0010: two fixes found after 0005/0004 landed.

-- resync.request is SECURITY DEFINER, so the column default current_user recorded the
-- function's owner; session_user is the role that asked. CREATE OR REPLACE keeps the grants.
CREATE OR REPLACE FUNCTION resync.request(
    p_course_unit_id bigint,
    p_reason text DEFAULT 'manual_trigger',
    p_delay interval DEFAULT interval '0'
) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO resync.requests (course_unit_id, reason, run_at, requested_by)
    VALUES (p_course_unit_id, coalesce(p_reason, 'manual_trigger'),
            now() + coalesce(p_delay, interval '0'), session_user)
    RETURNING job_id
$$;

-- PL/pgSQL kept choosing custom plans for sync_units' array parameter: planning cost about
-- 60 % of a single-row element update (bench/writer_tps, pg_stat_statements). The statements
-- are the same shape whatever the array holds; a generic plan is right for every size.
ALTER FUNCTION resync.sync_units(bigint[], boolean, boolean)
    SET plan_cache_mode = force_generic_plan;
