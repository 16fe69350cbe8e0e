-- The floors of the writers' benchmark, behind the real routing.
--
--   python -m bench.writer_tps --floors
--
-- floor_triggers.sql's row function, behind the triggers as they are: the start trigger and the
-- row trigger's WHEN clause that count the statement's rows, and the statement triggers, whose
-- WHEN skips a statement of one row. Its work is a copy of floor_triggers.sql's (a
-- call to a shared function would cost what the floor must not); bench.writer_tps refuses to
-- run if the two differ. What this adds to floor_triggers.sql is what routing single-row and
-- bulk statements costs; what the real triggers add to this is their own work (the flags, the
-- optimistic write, error handling and the queue's contract).
CREATE OR REPLACE FUNCTION resync.on_element_row() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF set_config('ue_resync.statement_rows',
                  CASE current_setting('ue_resync.statement_rows', true)
                  WHEN '2' THEN '2' ELSE 'done' END, true) = '2' THEN
        RETURN NULL;
    END IF;
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
