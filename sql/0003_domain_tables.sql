-- 0003: the catalogue tables, created when absent, completed when they already exist.
--
-- On an existing Laravel database this file only adds what is missing: every ADD COLUMN
-- carries a constant default, which PostgreSQL 11+ records in the catalogue without
-- rewriting the table; nothing is dropped, retyped or updated. Column types the Laravel
-- schema may have chosen differently (integer or numeric credits, json or jsonb,
-- timestamp or timestamptz) are left as they are: the sync functions (0004) cast on
-- assignment.

-- Section: teaching units (UE)
CREATE TABLE IF NOT EXISTS public.course_units (
    id          bigserial    PRIMARY KEY,
    code        varchar(50)  NOT NULL,
    name        varchar(255) NOT NULL,
    created_at  timestamptz  DEFAULT now(),
    updated_at  timestamptz  DEFAULT now()
);

ALTER TABLE public.course_units
    ADD COLUMN IF NOT EXISTS credits                    numeric(6,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_cm                   numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_td                   numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_tp                   numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_total                numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS elements_count             integer      NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_distribution         jsonb        NOT NULL
        DEFAULT '{"cm": 0, "td": 0, "tp": 0}'::jsonb,
    ADD COLUMN IF NOT EXISTS sync_credits_with_elements boolean      NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS sync_hours_with_elements   boolean      NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS auto_sync_enabled          boolean      NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS last_element_sync          timestamptz,
    ADD COLUMN IF NOT EXISTS last_job_sync              timestamptz;

-- Section: constituent elements (ECUE)
CREATE TABLE IF NOT EXISTS public.course_unit_elements (
    id              bigserial    PRIMARY KEY,
    course_unit_id  bigint       REFERENCES public.course_units (id) ON DELETE CASCADE,
    code            varchar(50)  NOT NULL,
    name            varchar(255) NOT NULL,
    created_at      timestamptz  DEFAULT now(),
    updated_at      timestamptz  DEFAULT now()
);

ALTER TABLE public.course_unit_elements
    ADD COLUMN IF NOT EXISTS credits      numeric(6,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_cm     numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_td     numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_tp     numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS hours_total  numeric(8,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS status       varchar(20)  NOT NULL DEFAULT 'active',
    ADD COLUMN IF NOT EXISTS deleted_at   timestamptz;

-- The sync reads a unit's elements by course_unit_id; Laravel does not index foreign keys
-- on PostgreSQL. Skip when any index already leads with that column.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'public.course_unit_elements'::regclass
          AND a.attname = 'course_unit_id'
    ) THEN
        CREATE INDEX course_unit_elements_course_unit_id_idx
            ON public.course_unit_elements (course_unit_id);
    END IF;
END $$;
