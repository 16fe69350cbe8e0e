-- 0016: the UE of a resync job in a column of its own, resync.pgqueuer.resync_unit, and the
-- coalescing key on it instead of on the text in the job's headers.
--
-- Why: every queued event goes through the one-queued-job-per-UE index; a bigint key is read
-- from the row as it is, where the expression index extracted and compared text from the headers'
-- jsonb at every insert, conflict check and lookup (docs/performance.md, "Deferred mode").
-- The headers keep course_unit_id and reason for people and pgqueuer's tools; what ue-resync
-- looks a job's UE up by is resync_unit.

-- Section: the column

-- NULL for jobs that are not resyncs, or were inserted by hand without it: such a job is
-- never coalesced, as a job without the course_unit_id header was not before.
ALTER TABLE resync.pgqueuer ADD COLUMN IF NOT EXISTS resync_unit bigint;

-- Section: the jobs already queued (a database upgraded with jobs in its queue)

-- Only headers written the way resync.enqueue wrote them (a positive integer as text, no
-- leading zero): two jobs whose headers differ then never share a UE in the column, so the
-- unique index below holds whatever the old index accepted.
UPDATE resync.pgqueuer
SET resync_unit = (headers ->> 'course_unit_id')::bigint
WHERE resync_unit IS NULL
  AND entrypoint = 'resync_course_unit'
  AND headers ->> 'course_unit_id' ~ '^[1-9][0-9]{0,17}$';

-- Section: the indexes

-- One queued job per UE at most: the key the coalescing INSERT … ON CONFLICT infers.
-- pgqueuer's own dedupe_key index also covers picked jobs, so it would swallow an event
-- that arrives while the UE's resync runs; this one covers queued jobs only.
CREATE UNIQUE INDEX IF NOT EXISTS pgqueuer_resync_queued_unit
    ON resync.pgqueuer (resync_unit)
    WHERE entrypoint = 'resync_course_unit' AND status = 'queued';

-- The UEs the daemon holds (picked: waiting for or in their resync), for the debounce.
CREATE INDEX IF NOT EXISTS pgqueuer_resync_picked_unit
    ON resync.pgqueuer (resync_unit)
    WHERE entrypoint = 'resync_course_unit' AND status = 'picked';

DROP INDEX IF EXISTS resync.pgqueuer_resync_one_queued_per_unit;
DROP INDEX IF EXISTS resync.pgqueuer_resync_picked_per_unit;
