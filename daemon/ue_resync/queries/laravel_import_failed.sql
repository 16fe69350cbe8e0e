-- import-laravel: one Laravel failed job becomes a failed resync job, as the daemon leaves
-- one after its last attempt: the job kept with status failed since failed_at (what
-- resync.failed_jobs and `ue-resync failed` show, and resync.retry_failed re-queues), and
-- pgqueuer's log entry with Laravel's whole exception text. Its run (laravel_start_run.sql,
-- laravel_fail_run.sql) is recorded next, by the daemon's own functions.
WITH job AS (
    INSERT INTO resync.pgqueuer
        (priority, entrypoint, status, execute_after, updated, attempts, payload, headers,
         resync_unit, resync_last_reason)
    VALUES (0, 'resync_course_unit', 'failed', %(failed_at)s, %(failed_at)s,
            %(attempts)s - 1,
            convert_to(jsonb_build_object(
                'course_unit_id', %(unit)s::bigint,
                'reason',         %(reason)s::text,
                'enqueued_at',    %(failed_at)s::timestamptz,
                'laravel_uuid',   %(uuid)s::text)::text, 'UTF8'),
            jsonb_build_object('course_unit_id', %(unit)s::bigint::text,
                               'reason', %(reason)s::text),
            %(unit)s::bigint,
            %(reason)s::text)
    RETURNING id, entrypoint, priority
), logged AS (
    INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback)
    SELECT job.id, 'failed', job.entrypoint, job.priority,
           jsonb_build_object(
               'job_id', job.id,
               'timestamp', %(failed_at)s::timestamptz,
               'exception_type', %(exception_type)s::text,
               'exception_message', %(exception_message)s::text,
               'traceback', %(exception)s::text,
               'additional_context', jsonb_build_object(
                   'laravel_uuid', %(uuid)s::text, 'connection', %(connection)s::text,
                   'queue', %(queue)s::text))
    FROM job
)
SELECT id FROM job
