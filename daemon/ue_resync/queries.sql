-- Every query the daemon and the command line send, by name (daemon/ue_resync/queries.py reads
-- them once). Most call a function of sql/definitions, where the logic lives; %(name)s are
-- psycopg parameters ($1… for pgqueuer's driver where the header says so).

-- Section: The daemon: a batch of jobs (store.py, queue_manager.py, worker.py)

-- name: start_runs
-- Open one run per job just dequeued; crashed earlier runs count as attempts.
SELECT job_id, run_id, attempt
FROM resync.start_runs(%(job_ids)s::bigint[], %(units)s::bigint[], %(reasons)s::text[], %(worker)s::uuid)

-- name: set_timeouts
-- Bound the resync transaction: statement and lock waits, both --timeout.
SELECT set_config('statement_timeout', %(timeout)s, true),
       set_config('lock_timeout', %(timeout)s, true)

-- name: complete_runs
-- Resync the batch's UEs and close their runs, in one transaction.
SELECT run_id, course_unit_id, code, outcome, changes,
       extract(epoch FROM duration)::float8 AS seconds
FROM resync.complete_runs(%(run_ids)s::bigint[], %(units)s::bigint[])

-- name: note_warnings
-- The LMD warnings of the UEs just resynced that appeared or changed: logged.
-- The LMD warnings of the UEs just resynced that appeared or changed since last noted: the
-- daemon logs these (resync.note_warnings).
SELECT course_unit_id, warning, detail
FROM resync.note_warnings(%(units)s::bigint[])

-- name: fail_runs
-- Record failed attempts, after the resync rolled back.
SELECT resync.fail_runs(%(run_ids)s::bigint[], %(outcomes)s::text[], %(errors)s::text[],
                        %(sqlstates)s::text[])

-- name: invalid_run
-- A job that cannot run (bad payload): one closed run row saying why.
INSERT INTO resync.job_runs
    (job_id, attempt, reason, worker_id, outcome, started_at, finished_at, error)
VALUES (%(job_id)s, %(attempt)s, NULL, %(worker)s, 'invalid', statement_timestamp(),
        statement_timestamp(), %(error)s)

-- name: retry_job
-- Re-queue a failed attempt after its backoff, coalescing-aware ($1 job, $2 delay, $3 traceback).
SELECT resync.retry_job($1::bigint, $2::interval, $3::jsonb)

-- name: release_jobs
-- Hand back the jobs this worker held when it lost the database.
SELECT resync.release_jobs(%(worker)s::uuid)

-- name: probe_queue_trigger
-- The wake-up check's probe: a change of no row to the queue table, whose trigger must notify.
-- The wake-up check's probe: a DELETE of no row fires the queue table's statement trigger
-- (tg_pgqueuer_changed, which notifies on INSERT, DELETE and TRUNCATE), whose NOTIFY must reach
-- the daemon's LISTEN (wakeups.py).
DELETE FROM resync.pgqueuer WHERE false

-- name: installation_differences
-- What ue-resync installed that the catalogue no longer holds as it was, logged at start.
SELECT kind, name, problem FROM resync.installation_differences()

-- name: is_superuser
-- Whether the daemon connected as a superuser (it warns).
SELECT rolsuper FROM pg_roles WHERE rolname = current_user

-- Section: The daemon: housekeeping and gauges (maintenance.py)

-- name: worker_heartbeat
-- This worker's registry row, upserted every few seconds.
INSERT INTO resync.workers (id, hostname, pid, version)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL

-- name: worker_stopped
-- This worker's registry row, marked stopped.
UPDATE resync.workers SET stopped_at = now() WHERE id = %(id)s

-- name: fail_unknown_entrypoints
-- Fail due jobs of entrypoints no worker runs.
SELECT resync.fail_unknown_entrypoints(%(worker)s::uuid)

-- name: prune_history
-- Delete history older than retention_success (the check timer).
SELECT resync.prune_history() AS deleted

-- name: queue_gauges
-- The queue's figures for the Prometheus gauges.
SELECT queued, due, delayed, running, failed_total, failed_last_hour,
       coalesce(extract(epoch FROM oldest_due_age), 0)::float8 AS oldest_due_seconds
FROM resync.queue_status

-- name: deferred_gauges
-- Queued jobs by reason family and SQLSTATE, with the events they absorbed.
-- Queued jobs by reason family (the reason without its _after_<action> suffix) and SQLSTATE,
-- with the events they absorbed beyond the first (coalescing).
SELECT split_part(coalesce(headers ->> 'reason', 'unknown'), '_after_', 1) AS reason,
       coalesce(resync.payload_json(payload) ->> 'sqlstate', '') AS sqlstate,
       count(*)::float8 AS jobs,
       coalesce(sum(greatest(resync_events - 1, 0)), 0)::float8 AS absorbed
FROM resync.pgqueuer
WHERE status = 'queued' AND entrypoint = 'resync_course_unit'
GROUP BY 1, 2

-- name: enqueued_total
-- Resync requests that reached the queue (ue_resync_enqueued_total).
-- Resync requests that reached the queue (ue_resync_enqueued_total): each INSERT into
-- resync.pgqueuer takes a number from its id sequence, a coalesced one (ON CONFLICT … DO UPDATE)
-- included, and a sequence never goes back, so its last value is a counter. A request rolled
-- back with its writer's transaction has taken its number too.
SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END::float8 AS enqueued
FROM resync.pgqueuer_id_seq s

-- name: unit_failures_max
-- The failures of the UE that failed most, not followed by a sync (the gauge).
-- The failures in the last 24 hours of the UE that failed most, not followed by a successful sync
-- (ue_resync_unit_failures_24h_max): what resync.alerts counts for unit_failures_24h.
SELECT coalesce(max(failures), 0)::float8 AS failures FROM resync.unit_failures()

-- Section: The operator's commands (commands.py)

-- name: queue_status
-- The figures of `ue-resync monitor`.
SELECT queued, due, delayed, running, failed_last_hour, failed_total, live_workers,
       extract(epoch FROM oldest_due_age)::float8 AS oldest_due_age_seconds,
       extract(epoch FROM run_time_avg)::float8   AS run_time_avg_seconds,
       extract(epoch FROM run_time_p95)::float8   AS run_time_p95_seconds
FROM resync.queue_status

-- name: alerts
-- The alerts firing now (`monitor --check`).
SELECT name, severity, value, threshold, detail
FROM resync.alerts
ORDER BY CASE severity WHEN 'critical' THEN 0 ELSE 1 END, name

-- name: failed_jobs
-- The failed jobs (`ue-resync failed`).
SELECT job_id, course_unit_id, reason, attempts, last_error, failed_at
FROM resync.failed_jobs
ORDER BY job_id

-- name: retry_failed
-- Re-queue a failed job now, or every one (NULL).
SELECT resync.retry_failed(%(job_id)s::bigint) AS count

-- name: forget_failed
-- Delete a failed job, or every one (NULL).
SELECT resync.forget_failed(%(job_id)s::bigint) AS count

-- name: clear_queue
-- Delete every queued job, returning them.
SELECT job_id, course_unit_id, reason, execute_after FROM resync.clear_queue()

-- name: request
-- Queue a resync of one UE after a delay.
SELECT resync.request(%(unit)s::bigint, %(reason)s::text, make_interval(secs => %(delay)s)) AS job_id

-- name: sync_now
-- Resync one UE here and now.
SELECT resync.sync_now(%(unit)s::bigint) AS result

-- name: drift
-- The drifted UEs with the columns that differ, stored and expected.
-- The drifted UEs with the columns that differ ({"column": [stored, expected]}), for
-- `ue-resync check` and migrate's report.
SELECT course_unit_id, code, differences
FROM resync.drift
ORDER BY course_unit_id

-- name: enqueue_drifted
-- Queue the resync of every drifted UE.
SELECT resync.enqueue_drifted() AS queued

-- Section: migrate (migrate.py)

-- name: ledger_exists
-- Whether a ledger table of schema resync exists, read from the catalogue.
-- Whether a ledger table (schema_migrations, schema_definitions) exists, read from the catalogue
-- with this statement's snapshot: to_regclass() would answer from this backend's relation
-- cache, stale when another installer created the ledger meanwhile.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'resync' AND c.relname = %(table)s
) AS present

-- name: migrations_applied
-- The numbered migrations applied, with the checksum each had.
SELECT version, name, checksum FROM resync.schema_migrations ORDER BY version

-- name: definitions_applied
-- The definitions files applied, with the checksum each had.
SELECT name, checksum FROM resync.schema_definitions ORDER BY name

-- name: migration_lock
-- Held to the end of the migrate transaction: a second installer waits here.
-- Held to the end of the migrate transaction: a second installer waits here, then sees
-- what the first recorded and applies nothing of it.
SELECT pg_advisory_xact_lock(hashtext('ue-resync migrate'))

-- name: migration_record
-- Record a numbered migration in the ledger.
INSERT INTO resync.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: definition_record
-- Record a definitions file in the ledger.
INSERT INTO resync.schema_definitions (name, checksum)
VALUES (%(name)s, %(checksum)s)
ON CONFLICT (name) DO UPDATE
SET checksum = excluded.checksum, applied_at = now(), applied_by = current_user

-- name: definitions_forget
-- Forget definitions files no longer shipped.
-- A definitions file no longer shipped: its objects are dropped by a numbered migration; its
-- ledger row goes with the definitions that replace it.
DELETE FROM resync.schema_definitions WHERE name <> ALL (%(names)s::text[])

-- name: mapping_installed
-- The mapping the installed definitions were rendered from.
SELECT key, value FROM resync.mapping ORDER BY key

-- name: mapping_record
-- Record the mapping the definitions were rendered from.
-- Record the mapping the definitions were rendered from, in migrate's transaction: its rows
-- replace whatever was there.
WITH recorded AS (
    INSERT INTO resync.mapping AS r (key, value, is_default, description)
    SELECT m.key, m.value::jsonb, m.is_default, m.description
    FROM unnest(%(keys)s::text[], %(values)s::text[], %(defaults)s::boolean[],
                %(descriptions)s::text[]) AS m(key, value, is_default, description)
    ON CONFLICT (key) DO UPDATE
    SET value = excluded.value, is_default = excluded.is_default,
        description = excluded.description
)
DELETE FROM resync.mapping WHERE key <> ALL (%(keys)s::text[])

-- name: objects_recorded
-- Whether migrate recorded what it installed.
SELECT EXISTS (SELECT 1 FROM resync.schema_objects) AS recorded

-- name: triggers_installed
-- Whether ue-resync's row trigger is on the elements table: false on a first install.
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relname = %(table)s
      AND t.tgname = 'course_unit_elements_resync_row'
) AS installed

-- name: add_unit_column
-- Add a sync timestamp the UEs lack (psycopg.sql: {table}, {column}).
-- A sync timestamp the UEs lack (mapping.ADDED_COLUMNS), added as the replaced system's own
-- migration added last_job_sync: nullable, no default, so no row is rewritten.
ALTER TABLE {table} ADD COLUMN {column} timestamptz

-- name: search_path_pin
-- Pin the search_path installation_differences() runs with, returning the one before.
SELECT current_setting('search_path') AS saved,
       set_config('search_path', 'pg_catalog, pg_temp', false) AS pinned

-- name: search_path_restore
-- Put back the search_path search_path_pin returned.
SELECT set_config('search_path', %(search_path)s, false)

-- Section: import-laravel (laravel_import.py)

-- name: laravel_table_exists
-- Whether a table of Laravel's exists.
SELECT to_regclass(%(name)s) IS NOT NULL

-- name: laravel_pending_jobs
-- Laravel's pending rows that may be the job class.
-- import-laravel: the rows of Laravel's jobs table that may be the job class (its short name
-- appears in the payload), locked until the import commits. {jobs}: the table, an identifier.
SELECT id, payload, attempts, reserved_at IS NOT NULL AS reserved,
       to_timestamp(available_at) AS due
FROM {jobs}
WHERE strpos(payload, %(short_name)s) > 0
ORDER BY id
FOR UPDATE

-- name: laravel_enqueue
-- A pending Laravel job becomes a resync job of its UE.
-- import-laravel: one pending Laravel job becomes a resync job of its UE, due when Laravel
-- would have run it (now when that is past), coalesced with the UE's queued job as usual.
SELECT e.job_id, e.coalesced
FROM resync.enqueue(array[%(unit)s::bigint], array[%(reason)s::text],
                    greatest(%(due)s::timestamptz - now(), interval '0')) e

-- name: laravel_failed_jobs
-- Laravel's failed rows that may be the job class, locked until the import commits.
-- import-laravel: the rows of Laravel's failed_jobs table that may be the job class, locked
-- until the import commits. failed_at is a timestamp without time zone, written in the
-- application's timezone (config app.timezone). {failed_jobs}: the table, an identifier.
SELECT id, uuid::text, connection, queue, payload, exception,
       failed_at AT TIME ZONE %(timezone)s AS failed_at
FROM {failed_jobs}
WHERE strpos(payload, %(short_name)s) > 0
ORDER BY id
FOR UPDATE

-- name: laravel_import_failed
-- A Laravel failed job becomes a failed resync job.
-- import-laravel: one Laravel failed job becomes a failed resync job, as the daemon leaves
-- one after its last attempt: the job kept with status failed since failed_at (what
-- resync.failed_jobs and `ue-resync failed` show, and resync.retry_failed re-queues), and
-- pgqueuer's log entry with Laravel's whole exception text. Its run (laravel_start_run,
-- laravel_fail_run) is recorded next, by the daemon's own functions.
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

-- name: laravel_start_run
-- The run of an imported failed job, opened as the daemon opens one.
-- import-laravel: the run of an imported failed job, opened as the daemon opens one (its
-- attempt is the job's attempts + 1: Laravel's tries), then closed by laravel_fail_run.sql.
SELECT run_id
FROM resync.start_runs(array[%(job_id)s::bigint], array[%(unit)s::bigint],
                       array[%(reason)s::text], NULL)

-- name: laravel_fail_run
-- The imported run failed, with Laravel's exception messages and SQLSTATE.
SELECT resync.fail_runs(array[%(run_id)s::bigint], array['failed'], array[%(error)s::text],
                        array[%(sqlstate)s::text])

-- name: laravel_delete_rows
-- The imported rows leave Laravel's table, in the import's transaction.
DELETE FROM {table} WHERE id = ANY (%(ids)s::bigint[])
