-- Least privilege: three group roles, none able to log in; an operator creates a login role
-- and grants it one of them (docs/operations.md).
--
--   resync_worker     what `ue-resync work` and `ue-resync check --enqueue` run, nothing more
--   resync_monitor    read the monitoring views and the run history
--   resync_requester  ask for a resync: INSERT INTO resync.requests, resync.request()
--
-- The application role that writes course_unit_elements needs nothing here: the trigger
-- functions are SECURITY DEFINER with a pinned search_path, and PostgreSQL checks neither
-- EXECUTE on a trigger function nor USAGE on its schema when the trigger fires.
--
-- Applied last of the definitions, so every object exists. It starts by taking back every
-- right these roles and PUBLIC hold in schema resync, then grants the lists below: what this
-- file says is all they have, whatever an earlier version granted.

-- Section: the roles
--
-- Roles are cluster-wide, grants are per database: the roles are created when absent (a second
-- database on the same cluster reuses them).

DO $$
DECLARE
    v_role    text;
    v_note    text;
    v_missing text[];
BEGIN
    -- Every role to create, said at once when the installing role cannot create them.
    SELECT array_agg(r ORDER BY r) INTO v_missing
    FROM unnest(array['resync_worker', 'resync_monitor', 'resync_requester']) r
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
    IF v_missing IS NOT NULL AND NOT (SELECT rolcreaterole OR rolsuper FROM pg_catalog.pg_roles
                                      WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'cannot create the roles % (% lacks CREATEROLE): as a role that has it, run %then migrate again; nothing was changed',
            array_to_string(v_missing, ', '), current_user,
            (SELECT string_agg(format('CREATE ROLE %I NOLOGIN; ', r), '' ORDER BY r)
             FROM unnest(v_missing) r)
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    FOR v_role, v_note IN VALUES
        ('resync_worker',    'ue-resync: what the daemon and the check timer need'),
        ('resync_monitor',   'ue-resync: read the operator views and alerts'),
        ('resync_requester', 'ue-resync: queue resyncs through resync.requests / resync.request()')
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXECUTE format('COMMENT ON ROLE %I IS %L', v_role, v_note);
        EXCEPTION
            -- The installer of another database on this cluster created it meanwhile (the
            -- migration lock is per database); pg_authid's unique index made us wait for it.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END LOOP;
END $$;

-- Section: from nothing
--
-- PostgreSQL grants EXECUTE on every new function to PUBLIC. Without USAGE on schema resync
-- that grant is unreachable, but each role below gets USAGE, and a requester able to call
-- resync.enqueue (SECURITY DEFINER) could fill the queue with any delay, resync.clear_queue
-- empty it. ALTER DEFAULT PRIVILEGES cannot take it back per schema (a per-schema REVOKE does
-- not undo the global default), hence this REVOKE, re-run with every change of the definitions;
-- tests/integration/test_roles.py fails when a function is left to PUBLIC.
REVOKE ALL ON ALL TABLES IN SCHEMA resync
    FROM PUBLIC, resync_worker, resync_monitor, resync_requester;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA resync
    FROM PUBLIC, resync_worker, resync_monitor, resync_requester;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA resync
    FROM PUBLIC, resync_worker, resync_monitor, resync_requester;
REVOKE ALL ON SCHEMA resync FROM PUBLIC;
GRANT USAGE ON SCHEMA resync TO resync_worker, resync_monitor, resync_requester;

-- Section: resync_worker
--
-- From daemon/ue_resync/queries.sql, the functions they call that are not SECURITY DEFINER
-- (they run with the caller's rights), and pgqueuer 1.6's own queries: dequeue (UPDATE … FOR
-- UPDATE SKIP LOCKED, then a 'picked' log row), heartbeat, log_jobs (DELETE done jobs, UPDATE
-- failed ones, log), log aggregation into pgqueuer_statistics (INSERT … ON CONFLICT DO
-- UPDATE), and its start-up checks (information_schema.columns only lists tables the role
-- has a right on). LISTEN and pg_notify need no grant; TEMP is not used.

-- migrate.check_current at start: the daemon refuses a schema older or newer than itself.
GRANT SELECT ON resync.schema_migrations, resync.schema_definitions, resync.mapping
TO resync_worker;
-- Jobs are claimed, heartbeaten, re-queued, held as failed or deleted; never inserted (the
-- SECURITY DEFINER resync.enqueue does that) and never truncated.
GRANT SELECT, UPDATE, DELETE ON resync.pgqueuer TO resync_worker;
-- pgqueuer_log.id is an identity column: INSERT needs no right on its sequence.
GRANT SELECT, INSERT, UPDATE ON resync.pgqueuer_log TO resync_worker;
GRANT SELECT, INSERT, UPDATE ON resync.pgqueuer_statistics TO resync_worker;
GRANT USAGE ON SEQUENCE resync.pgqueuer_statistics_id_seq TO resync_worker;  -- bigserial
-- Its own registry row (worker_heartbeat, worker_stopped) and one run row per attempt.
GRANT SELECT, INSERT, UPDATE ON resync.workers TO resync_worker;
GRANT SELECT, INSERT, UPDATE ON resync.job_runs TO resync_worker;
-- Gauges, the LMD checks after each resync, and the drift sweep of `ue-resync check`.
GRANT SELECT ON resync.queue_status, resync.validation_warnings, resync.drift TO resync_worker;
-- Prometheus: ue_resync_enqueued_total is the queue's id sequence (queries.sql, enqueued_total;
-- SELECT reads it, it cannot take a number); ue_resync_unit_failures_24h_max is what
-- resync.alerts counts (resync.unit_failures(), below).
GRANT SELECT ON SEQUENCE resync.pgqueuer_id_seq TO resync_worker;
GRANT EXECUTE ON FUNCTION
    resync.start_runs(bigint[], bigint[], text[], uuid),
    resync.complete_runs(bigint[], bigint[]),
    resync.sync_units(bigint[], boolean, boolean),       -- called by complete_runs, as the caller
    resync.fail_runs(bigint[], text[], text[], text[]),
    resync.retry_job(bigint, interval, jsonb),
    resync.release_jobs(uuid),
    resync.fail_unknown_entrypoints(uuid),
    resync.enqueue_drifted(),                            -- ue-resync check --enqueue
    resync.prune_history(timestamptz),                   -- ue-resync check
    resync.payload_json(bytea),                          -- deferred_gauges.sql
    -- The views over the catalogue call these (SECURITY DEFINER): see resync_monitor below.
    resync.expected_units(), resync.drifted(), resync.lmd_warnings(bigint[]),
    resync.installation_differences(),                      -- checked at start
    resync.unit_failures(interval),                      -- unit_failures_max.sql
    resync.note_warnings(bigint[])                       -- note_warnings.sql
TO resync_worker;

-- Section: resync_monitor
--
-- Views run with their owner's rights on tables, but a function a view calls is checked
-- against the reader (CREATE VIEW, "Notes"): hence the functions below, which read the
-- catalogue with their owner's rights (consistency.sql) or parse a payload. The run history is a
-- table it reads whole (no row of it is hidden from monitoring, so no view is needed to filter
-- it), with the workers' table for the host a run ran on.
GRANT SELECT ON resync.queue_status, resync.failed_jobs, resync.drift,
                resync.validation_warnings, resync.alerts
TO resync_monitor;
GRANT SELECT ON resync.job_runs, resync.workers TO resync_monitor;
-- What the installed definitions were rendered from: which columns the checks read.
GRANT SELECT ON resync.mapping TO resync_monitor;
-- `ue-resync monitor` checks the schema version before it reads the views.
GRANT SELECT ON resync.schema_migrations, resync.schema_definitions TO resync_monitor;
GRANT EXECUTE ON FUNCTION
    resync.payload_json(bytea),                       -- resync.failed_jobs
    resync.expected_units(), resync.drifted(),        -- resync.expected, resync.drift
    resync.lmd_warnings(bigint[]),                    -- resync.validation_warnings
    resync.unit_codes(bigint[]),                      -- resync.alerts
    resync.installation_differences(),                   -- resync.alerts
    resync.unit_failures(interval)                    -- resync.alerts
TO resync_monitor;

-- Section: resync_requester
--
-- Only the columns a request is made of: requested_by and requested_at keep their defaults
-- (who asked cannot be forged), id is generated, job_id is set by the trigger. SELECT on the
-- request log lets a client read back what it asked (INSERT … RETURNING id, job_id, as
-- Laravel's insertGetId does); the queue, the run history and the catalogue stay closed.
GRANT INSERT (course_unit_id, reason, run_at) ON resync.requests TO resync_requester;
GRANT SELECT ON resync.requests TO resync_requester;
GRANT EXECUTE ON FUNCTION resync.request(bigint, text, interval) TO resync_requester;
