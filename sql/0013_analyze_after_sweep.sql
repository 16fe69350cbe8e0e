-- 0013: a drift sweep that queues many jobs refreshes the queue's statistics.
--
-- pgqueuer's dequeue takes the due jobs in priority order with a LIMIT. Planned on statistics
-- that say the queue is small (as after the daemon drained it), it reads every due job and
-- sorts them at each dequeue: after `enqueue_drifted()` of 250,000 jobs on a server whose
-- autovacuum had not analysed the table yet, each dequeue took ~125 ms and the daemon drained
-- 1,005 jobs/s, against 4,320 jobs/s with fresh statistics (PostgreSQL 15, auto_explain).
-- Autovacuum gets there, a minute or more later (never, where it is off). A sweep is the one
-- place that queues that many jobs on purpose, so it analyses the queue table itself (a few
-- tenths of a second after 250,000 jobs: the sweep took 6.2–6.6 s with it, 6.2–6.4 s without;
-- skipped under 1,000, when a plan cannot go that wrong). The statistics
-- are seen, and the daemons' plans made again, when the sweep's transaction commits.
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
