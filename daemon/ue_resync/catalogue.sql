-- The application's tables with ue-resync's default names (the mapping's defaults), as a Laravel
-- migration would make them. ue-resync never creates them in a user's database: the demo does,
-- and so do the tests and the benchmarks (support/catalogue.py), before `migrate`.

-- Teaching units (UE)
CREATE TABLE public.course_units (
    id                          bigserial    PRIMARY KEY,
    code                        varchar(50)  NOT NULL,
    name                        varchar(255) NOT NULL,
    credits                     numeric(6,2) NOT NULL DEFAULT 0,
    hours_cm                    numeric(8,2) NOT NULL DEFAULT 0,
    hours_td                    numeric(8,2) NOT NULL DEFAULT 0,
    hours_tp                    numeric(8,2) NOT NULL DEFAULT 0,
    hours_total                 numeric(8,2) NOT NULL DEFAULT 0,
    elements_count              integer      NOT NULL DEFAULT 0,
    hours_distribution          jsonb        NOT NULL DEFAULT '{"cm": 0, "td": 0, "tp": 0}'::jsonb,
    sync_credits_with_elements  boolean      NOT NULL DEFAULT true,
    sync_hours_with_elements    boolean      NOT NULL DEFAULT true,
    auto_sync_enabled           boolean      NOT NULL DEFAULT true,
    last_element_sync           timestamptz,
    last_job_sync               timestamptz,
    created_at                  timestamptz  DEFAULT now(),
    updated_at                  timestamptz  DEFAULT now()
);

-- Constituent elements (ECUE)
CREATE TABLE public.course_unit_elements (
    id              bigserial    PRIMARY KEY,
    course_unit_id  bigint       REFERENCES public.course_units (id) ON DELETE CASCADE,
    code            varchar(50)  NOT NULL,
    name            varchar(255) NOT NULL,
    credits         numeric(6,2) NOT NULL DEFAULT 0,
    hours_cm        numeric(8,2) NOT NULL DEFAULT 0,
    hours_td        numeric(8,2) NOT NULL DEFAULT 0,
    hours_tp        numeric(8,2) NOT NULL DEFAULT 0,
    hours_total     numeric(8,2) NOT NULL DEFAULT 0,
    status          varchar(20)  NOT NULL DEFAULT 'active',
    deleted_at      timestamptz,
    created_at      timestamptz  DEFAULT now(),
    updated_at      timestamptz  DEFAULT now()
);

-- The sync reads a UE's elements by course_unit_id (migrate warns when no index leads with it).
CREATE INDEX course_unit_elements_course_unit_id_idx
    ON public.course_unit_elements (course_unit_id);
