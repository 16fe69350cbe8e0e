-- 0015: the ledger of sql/definitions/, and the baseline's names for a database migrated before
-- the baseline existed.
--
-- `ue-resync migrate` applies this file, then the definitions, in one transaction: the old
-- trigger functions dropped here are replaced before any writer can see them gone.

-- Section: the definitions ledger

-- One row per file of sql/definitions/, with the checksum it was applied with. When any shipped
-- file's checksum differs from its row, migrate re-applies all of them (daemon/ue_resync/migrate.py).
CREATE TABLE IF NOT EXISTS resync.schema_definitions (
    name        text        PRIMARY KEY,  -- the file's name without .sql
    checksum    text        NOT NULL,     -- sha256 of the file as applied
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text        NOT NULL DEFAULT current_user
);

-- Section: a database migrated before the baseline
--
-- Its ledger reads 1–14 from the numbered files the baseline replaced. Its tables and rows are
-- the baseline's under two older names; its functions, triggers and views are replaced by the
-- definitions, except those whose name or signature changed, dropped here. On a database made
-- from the baseline nothing below exists and nothing happens.

DROP TRIGGER IF EXISTS course_unit_elements_resync_insert ON public.course_unit_elements;
DROP TRIGGER IF EXISTS course_unit_elements_resync_update ON public.course_unit_elements;
DROP TRIGGER IF EXISTS course_unit_elements_resync_delete ON public.course_unit_elements;
DROP FUNCTION IF EXISTS resync.on_elements_changed();
-- CASCADE: with it goes the old course_unit_elements_resync_row, whose name the new row trigger
-- keeps (a DROP TRIGGER by name would take the new one too, were this file run again by hand).
DROP FUNCTION IF EXISTS resync.on_element_row_changed() CASCADE;
-- Both now one function, resync.enqueue with six arguments.
DROP FUNCTION IF EXISTS resync.queue_jobs(bigint[], text[], interval, text, text, boolean);
DROP FUNCTION IF EXISTS resync.enqueue(bigint[], text[], interval, text, text);

DO $$
DECLARE
    v_old text;
    v_new text;
    v_constraint text;
BEGIN
    IF to_regclass('resync.run_history') IS NOT NULL THEN
        -- The view of the same rows goes; the table takes its name, rows and grants kept.
        DROP VIEW resync.job_runs;
    END IF;
    FOR v_old, v_new IN VALUES ('run_history', 'job_runs'), ('settings', 'thresholds') LOOP
        CONTINUE WHEN to_regclass('resync.' || v_old) IS NULL;
        EXECUTE format('ALTER TABLE resync.%I RENAME TO %I', v_old, v_new);
        -- Constraints (primary key, checks, and from PostgreSQL 18 the NOT NULLs), indexes and
        -- the identity sequence keep the old table's name in theirs: they take the new one.
        FOR v_constraint IN
            SELECT conname FROM pg_catalog.pg_constraint
            WHERE conrelid = format('resync.%I', v_new)::regclass AND conname LIKE v_old || '\_%'
        LOOP
            EXECUTE format('ALTER TABLE resync.%I RENAME CONSTRAINT %I TO %I', v_new,
                           v_constraint, v_new || substr(v_constraint, length(v_old) + 1));
        END LOOP;
        FOR v_constraint IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'resync'::regnamespace AND c.relkind IN ('i', 'S')
              AND c.relname LIKE v_old || '\_%'
        LOOP
            EXECUTE format('ALTER %s resync.%I RENAME TO %I',
                           CASE WHEN v_constraint LIKE '%\_seq' THEN 'SEQUENCE' ELSE 'INDEX' END,
                           v_constraint, v_new || substr(v_constraint, length(v_old) + 1));
        END LOOP;
    END LOOP;
END $$;
