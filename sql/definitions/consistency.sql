-- Consistency: what a sync would write now, the UEs that differ from it, the sweep that queues
-- their resync, and the LMD checks on the stored values.

-- resync.expected: per UE (auto_sync_enabled only), what a sync would write now. No role reads
-- it but through resync.drift, which is the security barrier (monitoring_views.sql says why).
CREATE OR REPLACE VIEW resync.expected AS
WITH
-- Sums over the elements that count, one pass over course_unit_elements.
sums AS (
    SELECT e.course_unit_id AS id,
           sum(coalesce(e.credits::numeric, 0))     AS credits,
           sum(coalesce(e.hours_cm::numeric, 0))    AS hours_cm,
           sum(coalesce(e.hours_td::numeric, 0))    AS hours_td,
           sum(coalesce(e.hours_tp::numeric, 0))    AS hours_tp,
           sum(coalesce(e.hours_total::numeric, 0)) AS hours_total,
           count(*)::integer                        AS n
    FROM public.course_unit_elements e
    WHERE e.status = 'active' AND e.deleted_at IS NULL
    GROUP BY e.course_unit_id
),
-- The flags decide which stored columns follow the elements.
expected AS (
    SELECT u.id, u.code,
           CASE WHEN u.sync_credits_with_elements
                THEN coalesce(s.credits, 0) ELSE u.credits::numeric END         AS credits,
           CASE WHEN u.sync_hours_with_elements
                THEN coalesce(s.hours_cm, 0) ELSE u.hours_cm::numeric END       AS hours_cm,
           CASE WHEN u.sync_hours_with_elements
                THEN coalesce(s.hours_td, 0) ELSE u.hours_td::numeric END       AS hours_td,
           CASE WHEN u.sync_hours_with_elements
                THEN coalesce(s.hours_tp, 0) ELSE u.hours_tp::numeric END       AS hours_tp,
           CASE WHEN u.sync_hours_with_elements
                THEN coalesce(s.hours_total, 0) ELSE u.hours_total::numeric END AS hours_total,
           coalesce(s.n, 0) AS elements_count
    FROM public.course_units u
    LEFT JOIN sums s ON s.id = u.id
    WHERE u.auto_sync_enabled
)
SELECT x.*, resync.hours_distribution(x.hours_cm, x.hours_td, x.hours_tp, x.hours_total)
            AS hours_distribution
FROM expected x;

-- resync.drift: every UE whose stored totals differ from its active elements, stored
-- next to expected. Units with auto_sync_enabled = false are deliberately out of sync.
-- Read by resync_worker (the sweep) and resync_monitor.
CREATE OR REPLACE VIEW resync.drift WITH (security_barrier = true) AS
SELECT u.id                         AS course_unit_id,
       u.code,
       u.credits::numeric           AS stored_credits,       x.credits        AS expected_credits,
       u.hours_cm::numeric          AS stored_hours_cm,      x.hours_cm       AS expected_hours_cm,
       u.hours_td::numeric          AS stored_hours_td,      x.hours_td       AS expected_hours_td,
       u.hours_tp::numeric          AS stored_hours_tp,      x.hours_tp       AS expected_hours_tp,
       u.hours_total::numeric       AS stored_hours_total,   x.hours_total    AS expected_hours_total,
       u.elements_count             AS stored_elements_count, x.elements_count AS expected_elements_count,
       u.hours_distribution::jsonb  AS stored_hours_distribution,
       x.hours_distribution         AS expected_hours_distribution,
       u.last_element_sync,
       u.last_job_sync
FROM public.course_units u
JOIN resync.expected x ON x.id = u.id
WHERE (u.credits::numeric, u.hours_cm::numeric, u.hours_td::numeric, u.hours_tp::numeric,
       u.hours_total::numeric, u.elements_count, u.hours_distribution::jsonb)
      IS DISTINCT FROM
      (x.credits, x.hours_cm, x.hours_td, x.hours_tp, x.hours_total, x.elements_count,
       x.hours_distribution);

-- resync.validation_warnings: the LMD checks the old job logged after each sync, on the
-- stored values, one row per UE and warning.
CREATE OR REPLACE VIEW resync.validation_warnings WITH (security_barrier = true) AS
SELECT u.id AS course_unit_id, u.code, w.warning, w.detail
FROM public.course_units u
CROSS JOIN LATERAL (
    VALUES
        ('credits_above_6',
         CASE WHEN u.credits::numeric > 6
              THEN format('%s ECTS credits (at most 6 expected)', u.credits) END),
        ('hours_per_credit_out_of_range',
         CASE WHEN u.credits::numeric > 0
               AND (u.hours_total::numeric / u.credits::numeric NOT BETWEEN 15 AND 35)
              THEN format('%s hours per credit (15 to 35 expected)',
                          round(u.hours_total::numeric / u.credits::numeric, 1)) END),
        ('cm_share_out_of_range',
         CASE WHEN u.hours_cm::numeric > 0 AND u.hours_total::numeric > 0
               AND (u.hours_cm::numeric * 100 / u.hours_total::numeric NOT BETWEEN 30 AND 70)
              THEN format('CM is %s %% of the hours (30 to 70 %% expected)',
                          round(u.hours_cm::numeric * 100 / u.hours_total::numeric, 1)) END),
        ('too_many_elements',
         CASE WHEN u.elements_count > 6
              THEN format('%s active elements (at most 6 expected)', u.elements_count) END),
        ('no_elements',
         CASE WHEN u.elements_count = 0 THEN 'no active element' END)
) AS w(warning, detail)
WHERE w.detail IS NOT NULL;

-- resync.enqueue_drifted: queue a resync (reason drift_detected, due now) for every drifted UE.
-- Called by: `ue-resync check --enqueue` (the check timer), and by hand.
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
    SELECT coalesce(array_agg(d.course_unit_id ORDER BY d.course_unit_id), '{}')
    INTO v_ids
    FROM resync.drift d;

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
