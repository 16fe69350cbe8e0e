-- 0017: the mapping of the application's tables, recorded; nothing of ue-resync left depending
-- on an application column; the LMD checks' limits as thresholds.
--
-- `ue-resync migrate` writes resync.mapping in the same transaction as the definitions it
-- rendered from it (daemon/ue_resync/mapping.py says what each key is).

-- Section: the mapping

-- One row per key of the mapping the installed definitions were rendered from. value is JSON:
-- a column name, a list of status values, or null for an optional column the catalogue lacks.
CREATE TABLE IF NOT EXISTS resync.mapping (
    key         text    PRIMARY KEY,  -- section.key: units.credits, elements.counted, …
    value       jsonb   NOT NULL,
    is_default  boolean NOT NULL,     -- the value is ue-resync's own name for it
    description text    NOT NULL
);

-- Section: no view over the application's tables
--
-- A view pins the columns it reads: `ALTER TABLE course_unit_elements ALTER COLUMN credits
-- TYPE numeric(7,2)` failed on resync.expected, and `pg_restore --clean` of the two tables on
-- the same dependency. These views come back (definitions/consistency.sql) over functions,
-- whose bodies pin nothing. resync.alerts reads resync.drift and goes with it.
DROP VIEW IF EXISTS resync.alerts;
DROP VIEW IF EXISTS resync.drift;
DROP VIEW IF EXISTS resync.expected;
DROP VIEW IF EXISTS resync.validation_warnings;
-- Now a fragment of the recompute rule (sql/rule.sql), inlined where it is used: migrate
-- --preview evaluates the rule before anything is installed.
DROP FUNCTION IF EXISTS resync.hours_distribution(numeric, numeric, numeric, numeric);

-- Section: the LMD checks' limits

ALTER TABLE resync.thresholds DROP CONSTRAINT IF EXISTS thresholds_value_sane;
ALTER TABLE resync.thresholds ADD CONSTRAINT thresholds_value_sane CHECK (CASE
    WHEN name IN ('failed_jobs_last_hour', 'queued_jobs', 'unit_failures_24h')
        THEN value ~ '^[0-9]{1,9}$'
    WHEN name IN ('due_job_wait', 'worker_heartbeat_fresh')
        THEN value::interval > interval '0'
    -- Below a day, the 24-hour alert would lose the failures it counts.
    WHEN name = 'retention_success'
        THEN value::interval >= interval '1 day'
    WHEN name LIKE 'lmd\_%'
        THEN value ~ '^[0-9]{1,6}(\.[0-9]{1,2})?$'
    ELSE true END);

INSERT INTO resync.thresholds (name, value, description) VALUES
    ('lmd_credits_max', '6',
     'LMD check credits_above_max: a UE holding more ECTS credits than this'),
    ('lmd_hours_per_credit_min', '15',
     'LMD check hours_per_credit_out_of_range: fewer teaching hours per credit than this'),
    ('lmd_hours_per_credit_max', '35',
     'LMD check hours_per_credit_out_of_range: more teaching hours per credit than this'),
    ('lmd_cm_share_min', '30',
     'LMD check cm_share_out_of_range: a smaller share of CM in the hours (%) than this'),
    ('lmd_cm_share_max', '70',
     'LMD check cm_share_out_of_range: a larger share of CM in the hours (%) than this'),
    ('lmd_elements_max', '6',
     'LMD check too_many_elements: more counted elements than this')
ON CONFLICT (name) DO NOTHING;
