-- Consistency: what a sync would write now, the UEs that differ from it, the sweep that queues
-- their resync, and the LMD checks on the stored values.
--
-- Functions over the application's tables, with views in schema resync over the functions: a
-- view over the tables would pin their columns (`ALTER COLUMN … TYPE`, which a Laravel
-- migration's ->change() runs, fails on a column a view reads), a function body does not. They
-- are SECURITY DEFINER: a reader needs no right on the application's tables.

-- resync.expected_units: per UE with auto sync, what a sync would write now (sql/rule.sql).
-- Read by resync.drift and the view resync.expected; writes nothing.
CREATE OR REPLACE FUNCTION resync.expected_units()
RETURNS TABLE (id bigint, code text, credits numeric, hours_cm numeric, hours_td numeric,
               hours_tp numeric, hours_total numeric, elements_count integer,
               hours_distribution jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    {rule.expected_units}
$$;

CREATE OR REPLACE VIEW resync.expected WITH (security_barrier = true) AS
SELECT * FROM resync.expected_units();

-- resync.drifted: every UE whose stored columns differ from what a sync would write, stored
-- next to expected, and `differences`, the columns that differ by the application's names:
-- {{"hours_cm": [119, 118]}} (stored, expected). UEs with auto sync off are deliberately out of
-- sync. Read through the view resync.drift (`ue-resync check`, the sweep, the alerts).
CREATE OR REPLACE FUNCTION resync.drifted()
RETURNS TABLE (course_unit_id bigint, code text,
               stored_credits numeric, expected_credits numeric,
               stored_hours_cm numeric, expected_hours_cm numeric,
               stored_hours_td numeric, expected_hours_td numeric,
               stored_hours_tp numeric, expected_hours_tp numeric,
               stored_hours_total numeric, expected_hours_total numeric,
               stored_elements_count integer, expected_elements_count integer,
               stored_hours_distribution jsonb, expected_hours_distribution jsonb,
               differences jsonb,
               last_element_sync timestamptz, last_job_sync timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    {rule.drift}
    ORDER BY course_unit_id
$$;

CREATE OR REPLACE VIEW resync.drift WITH (security_barrier = true) AS
SELECT * FROM resync.drifted();

-- resync.lmd_warnings: the LMD checks the replaced job logged after each sync, on the stored
-- values, one row per UE and warning, for the given UEs (NULL: all). Their limits are rows of
-- resync.thresholds (lmd_*). Called by resync.note_warnings after each batch of the daemon, and read
-- through the view resync.validation_warnings.
-- Why force_custom_plan: a plan made for the actual argument reads the given UEs by their key,
--   where a generic one would scan every UE to honour "NULL: all".
CREATE OR REPLACE FUNCTION resync.lmd_warnings(p_units bigint[] DEFAULT NULL)
RETURNS TABLE (course_unit_id bigint, code text, warning text, detail text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_credits_max   numeric;
    v_per_credit    numrange;
    v_cm_share      numrange;
    v_elements_max  numeric;
BEGIN
    SELECT coalesce(max(t.value) FILTER (WHERE t.name = 'lmd_credits_max'), '6')::numeric,
           numrange(coalesce(max(t.value) FILTER (WHERE t.name = 'lmd_hours_per_credit_min'),
                             '15')::numeric,
                    coalesce(max(t.value) FILTER (WHERE t.name = 'lmd_hours_per_credit_max'),
                             '35')::numeric, '[]'),
           numrange(coalesce(max(t.value) FILTER (WHERE t.name = 'lmd_cm_share_min'),
                             '30')::numeric,
                    coalesce(max(t.value) FILTER (WHERE t.name = 'lmd_cm_share_max'),
                             '70')::numeric, '[]'),
           coalesce(max(t.value) FILTER (WHERE t.name = 'lmd_elements_max'), '6')::numeric
    INTO v_credits_max, v_per_credit, v_cm_share, v_elements_max
    FROM resync.thresholds t;

    RETURN QUERY
    SELECT {u.id}::bigint, {u.code}::text, w.warning, w.detail
    FROM {units} u
    CROSS JOIN LATERAL (SELECT {rule.stored}) t
    CROSS JOIN LATERAL (
        VALUES
            ('credits_above_max',
             CASE WHEN t.credits > v_credits_max
                  THEN format('%s ECTS credits (at most %s expected)', t.credits, v_credits_max)
             END),
            ('hours_per_credit_out_of_range',
             CASE WHEN t.credits > 0 AND NOT (t.hours_total / t.credits) <@ v_per_credit
                  THEN format('%s hours per credit (%s to %s expected)',
                              round(t.hours_total / t.credits, 1),
                              lower(v_per_credit), upper(v_per_credit))
             END),
            ('cm_share_out_of_range',
             CASE WHEN t.hours_cm > 0 AND t.hours_total > 0
                   AND NOT (t.hours_cm * 100 / t.hours_total) <@ v_cm_share
                  THEN format('CM is %s %% of the hours (%s to %s %% expected)',
                              round(t.hours_cm * 100 / t.hours_total, 1),
                              lower(v_cm_share), upper(v_cm_share))
             END),
            ('too_many_elements',
             CASE WHEN t.elements_count > v_elements_max
                  THEN format('%s active elements (at most %s expected)', t.elements_count,
                              v_elements_max)
             END),
            ('no_elements',
             CASE WHEN t.elements_count = 0 THEN 'no active element' END)
    ) AS w(warning, detail)
    WHERE (p_units IS NULL OR {u.id} = ANY (p_units))
      AND w.detail IS NOT NULL
    ORDER BY 1, 3;
END
$$;

CREATE OR REPLACE VIEW resync.validation_warnings WITH (security_barrier = true) AS
SELECT * FROM resync.lmd_warnings(NULL);

-- resync.unit_codes: the code of each given UE that exists (the application's label), for the
-- alerts' messages; no right on the application's tables needed.
CREATE OR REPLACE FUNCTION resync.unit_codes(p_units bigint[])
RETURNS TABLE (course_unit_id bigint, code text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT {u.id}::bigint, {u.code}::text FROM {units} u WHERE {u.id} = ANY (p_units)
$$;

-- resync.enqueue_drifted: queue a resync (reason drift_detected, due now) for every drifted UE.
-- Called by: `ue-resync check --enqueue` (the check timer), `migrate --accept-resync`, and by
--   hand.
-- Writes: resync.pgqueuer through resync.enqueue (coalesced into queued jobs where present);
--   returns how many UEs it queued.
-- Why: pgqueuer's dequeue takes the due jobs in priority order with a LIMIT; planned on
--   statistics that say the queue is small (as after the daemon drained it), it reads and sorts
--   every due job at each dequeue. Autovacuum refreshes the statistics a minute or more later
--   (never, where it is off), and a sweep is the one place that queues that many jobs on
--   purpose, so from 1,000 jobs on it analyses the queue table itself. The statistics are seen,
--   and the daemons' plans made again, when the sweep's transaction commits.
CREATE OR REPLACE FUNCTION resync.enqueue_drifted() RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids    bigint[];
    v_queued integer;
BEGIN
    SELECT coalesce(array_agg(d.course_unit_id ORDER BY d.course_unit_id), '{{}}')
    INTO v_ids
    FROM resync.drifted() d;

    SELECT count(*)::integer
    INTO v_queued
    FROM resync.enqueue(v_ids, array_fill('drift_detected'::text, array[cardinality(v_ids)]),
                        interval '0');

    IF v_queued >= 1000 THEN
        ANALYZE resync.pgqueuer;
    END IF;
    RETURN v_queued;
END
$$;

-- resync.note_warnings: the LMD warnings of the given UEs that appeared or changed since they
-- were last noted; notes them (resync.unit_warnings) and forgets the ones that cleared.
-- Called by: the daemon after each batch (queries.sql, note_warnings), which logs what it returns: a
--   UE's warning is logged when it appears or changes, not at every resync.
CREATE OR REPLACE FUNCTION resync.note_warnings(p_units bigint[])
RETURNS TABLE (course_unit_id bigint, warning text, detail text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH
    now_found AS (SELECT w.course_unit_id, w.warning, w.detail FROM resync.lmd_warnings(p_units) w),
    -- The warnings that cleared (disjoint from the rows written below).
    cleared AS (
        DELETE FROM resync.unit_warnings u
        WHERE u.course_unit_id = ANY (p_units)
          AND NOT EXISTS (SELECT 1 FROM now_found f
                          WHERE f.course_unit_id = u.course_unit_id AND f.warning = u.warning)
    )
    INSERT INTO resync.unit_warnings AS u (course_unit_id, warning, detail)
    SELECT f.course_unit_id, f.warning, f.detail FROM now_found f
    ON CONFLICT (course_unit_id, warning) DO UPDATE
    SET detail = excluded.detail, noted_at = now()
    WHERE u.detail IS DISTINCT FROM excluded.detail
    RETURNING u.course_unit_id, u.warning, u.detail
$$;
