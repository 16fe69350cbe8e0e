-- import-laravel: the run of an imported failed job, opened as the daemon opens one (its
-- attempt is the job's attempts + 1: Laravel's tries), then closed by laravel_fail_run.sql.
SELECT run_id
FROM resync.start_runs(array[%(job_id)s::bigint], array[%(unit)s::bigint],
                       array[%(reason)s::text], NULL)
