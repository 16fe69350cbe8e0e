-- The floors of the writers' benchmark: the least a row trigger can do for each mode.
--
--   BENCH_EXTRA_SQL=bench/floor_triggers.sql python -m bench.writer_tps --rounds 3
--
-- Applied after the migrations, this replaces what the benchmark's "inline" and "deferred"
-- variants run with one plain PL/pgSQL AFTER ROW trigger, no WHEN clause, no statement
-- trigger, no settings read, no error handling, no SECURITY DEFINER: inline writes the UE's
-- sums in one UPDATE, deferred one minimal INSERT … ON CONFLICT into the queue table (no
-- payload, no debounce). Nothing a real design can drop; what it cannot do (route bulk
-- statements, survive a failed sync, honour the UE's flags and the queue's contract) is what
-- resync's triggers add. If a floor misses a target, no PL/pgSQL trigger design meets it on
-- that server and machine (docs/performance.md, "Single-row writers").
CREATE OR REPLACE FUNCTION resync.on_element_row() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('ue_resync.mode', true) = 'deferred' THEN
        INSERT INTO resync.pgqueuer AS q
            (priority, entrypoint, status, execute_after, payload, resync_unit)
        VALUES (0, 'resync_course_unit', 'queued', now(), '\x'::bytea, NEW.course_unit_id)
        ON CONFLICT (resync_unit) WHERE entrypoint = 'resync_course_unit' AND status = 'queued'
        DO UPDATE SET resync_events = q.resync_events + 1;
    ELSE
        UPDATE public.course_units u
        SET credits            = s.credits,
            hours_cm           = s.cm,
            hours_td           = s.td,
            hours_tp           = s.tp,
            hours_total        = s.total,
            elements_count     = s.n,
            hours_distribution = CASE WHEN s.total <= 0 THEN '{"cm": 0, "td": 0, "tp": 0}'::jsonb
                                      ELSE jsonb_build_object('cm', round(s.cm * 100 / s.total, 1),
                                                              'td', round(s.td * 100 / s.total, 1),
                                                              'tp', round(s.tp * 100 / s.total, 1))
                                 END,
            last_element_sync  = clock_timestamp()
        FROM (SELECT coalesce(sum(e.credits::numeric), 0)     AS credits,
                     coalesce(sum(e.hours_cm::numeric), 0)    AS cm,
                     coalesce(sum(e.hours_td::numeric), 0)    AS td,
                     coalesce(sum(e.hours_tp::numeric), 0)    AS tp,
                     coalesce(sum(e.hours_total::numeric), 0) AS total,
                     count(*)::integer                        AS n
              FROM public.course_unit_elements e
              WHERE e.course_unit_id = NEW.course_unit_id
                AND e.status = 'active'
                AND e.deleted_at IS NULL) s
        WHERE u.id = NEW.course_unit_id;
    END IF;
    RETURN NULL;
END
$$;

-- Every row calls the function (no WHEN); the statement trigger never fires (WHEN (false), no
-- transition tables), nor does the start trigger (WHEN (false)). The benchmark enables and disables
-- the triggers by name (bench/common.py, TRIGGERS).
CREATE OR REPLACE TRIGGER course_unit_elements_resync_start
    BEFORE INSERT OR UPDATE OR DELETE ON public.course_unit_elements
    FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION resync.on_statement_start();
CREATE OR REPLACE TRIGGER course_unit_elements_resync_row
    AFTER INSERT OR UPDATE OR DELETE ON public.course_unit_elements
    FOR EACH ROW EXECUTE FUNCTION resync.on_element_row();
CREATE OR REPLACE TRIGGER course_unit_elements_resync_statement_update
    AFTER UPDATE ON public.course_unit_elements
    FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION resync.on_element_statement();
