-- 0001: the `resync` schema, the migrations ledger and the error policy.
--
-- Every object of ue-resync lives in schema `resync`; the application's own tables
-- (course_units, course_unit_elements) stay where they are (0003).

CREATE SCHEMA IF NOT EXISTS resync;

-- Ledger of applied migrations. `ue-resync migrate` and `ue-resync migrate --print-sql | psql`
-- both insert one row per file, in the same transaction as the file itself.
CREATE TABLE IF NOT EXISTS resync.schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,  -- sha256 of the file as applied
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text        NOT NULL DEFAULT current_user
);

-- What a failed inline sync does, keyed by SQLSTATE. Looked up longest pattern first:
-- an exact code (5 characters) beats a class (2 characters), which beats the catch-all ''.
CREATE TABLE IF NOT EXISTS resync.error_policy (
    sqlstate_pattern text     PRIMARY KEY
        CHECK (sqlstate_pattern ~ '^([0-9A-Z]{2}|[0-9A-Z]{5})?$'),
    reason_prefix    text     NOT NULL
        CHECK (reason_prefix ~ '^[a-z_]{1,60}$'),
    delay            interval NOT NULL DEFAULT interval '2 minutes'
        CHECK (delay >= interval '0'),
    auto_resync      boolean  NOT NULL DEFAULT true,  -- false: record the failure, queue nothing
    note             text
);

INSERT INTO resync.error_policy (sqlstate_pattern, reason_prefix, delay, note) VALUES
    ('40P01', 'deadlock_recovery', interval '30 seconds', 'deadlock_detected (Laravel: Deadlock, 30 s)'),
    ('40001', 'deadlock_recovery', interval '30 seconds', 'serialization_failure, a concurrency conflict like a deadlock'),
    ('',      'sync_error',        interval '2 minutes',  'any other SQL error (Laravel: QueryException, 2 min)')
ON CONFLICT (sqlstate_pattern) DO NOTHING;

-- Every inline sync that failed, whether or not it queued a job: the record an operator
-- reads when a policy row says auto_resync = false, and the source of deferral figures.
CREATE TABLE IF NOT EXISTS resync.sync_failures (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    course_unit_id  bigint      NOT NULL,
    action          text        NOT NULL,
    reason          text        NOT NULL,
    sqlstate        text        NOT NULL,
    error           text        NOT NULL,
    job_id          bigint                 -- NULL when the policy queued nothing
);
CREATE INDEX IF NOT EXISTS sync_failures_failed_at_idx ON resync.sync_failures (failed_at);
CREATE INDEX IF NOT EXISTS sync_failures_unit_idx ON resync.sync_failures (course_unit_id, failed_at);
