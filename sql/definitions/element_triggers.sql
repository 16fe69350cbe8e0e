-- The triggers on course_unit_elements: what happens to a UE when one of its elements is
-- written. Settings the writer may set (per session, role or database, e.g.
-- `ALTER DATABASE app SET ue_resync.lock_timeout = '250ms'`):
--   ue_resync.mode               inline (default) | deferred | off
--   ue_resync.lock_timeout       how long a writer waits for its UE row before deferring
--                                (default 100ms; '0' means no limit, as for lock_timeout)
--   ue_resync.debounce, ue_resync.debounce_max_wait   deferred mode (queueing.sql)
--
-- A statement of one row is synced by the row path, a statement of several by the statement
-- path. Which one is told by counting the statement's rows in the transaction-local setting
-- ue_resync.statement_rows: a small function at the statement's start, WHEN clauses after.
--   course_unit_elements_resync_start (BEFORE STATEMENT, resync.on_statement_start): sets the
--       count to 0 (2 when a statement of this table is still writing its rows).
--   course_unit_elements_resync_row (AFTER ROW, resync.on_element_row): its WHEN, evaluated as
--       each row is written, counts 1 at the first row, which queues the event, then 2. The
--       function syncs or queues that row's UE (both UEs of a move) unless the count reads 2,
--       and marks it done.
--   course_unit_elements_resync_statement_insert/update/delete (AFTER STATEMENT,
--       resync.on_element_statement): their WHEN, evaluated as the statement ends (before the
--       row function runs), skips a count of 1; else the function syncs or queues every UE the
--       statement touched, from the transition tables.
-- Why two paths: a single-row statement is most of what an application writes, and a row
-- trigger reads OLD and NEW for free with plans it keeps, where every query over a transition
-- table is planned again at each call; a bulk statement needs the set-based path to sync each
-- UE once. Why short WHEN clauses and a function at the start: a WHEN clause is read back from
-- its stored text and prepared again at every statement, at a price that grows with its size;
-- past a few expressions a plain function call is cheaper (docs/performance.md, "What each
-- guarantee costs a write").
--
-- Every row is synced by one of the two, whatever else writes the table meanwhile: a row the
-- row path does not take is counted 2, or finds the count done, and its statement then ends
-- with a count other than 1. A statement run by a trigger (the application's own on this
-- table) once this one's rows are written finds the count 1 or 2, or done: it takes the
-- statement path, or counts afresh after a done; this one's row function syncs its row all
-- the same. A statement run while this one still writes its rows (by a function in its query)
-- starts at 2 and takes the statement path, and so does this one. With the row trigger
-- disabled nothing counts 1, and every statement takes the statement path. Disable the six
-- triggers together or not at all (bench/common.py does; `migrate --verify` says when not).
-- (The two replica triggers below fire for a logical replication subscriber only.)
--
-- On failure, inline mode: the sync runs in a subtransaction; on any error it rolls back, the
-- writer's statement goes on, and resync.error_policy decides the job and its delay.

-- Section: failed inline syncs

-- The policy row for a SQLSTATE: exact code, then class, then the catch-all ''.
-- With no catch-all row left, a failure still queues: sync_error after 2 minutes.
CREATE OR REPLACE FUNCTION resync.policy_for(p_sqlstate text)
RETURNS TABLE (reason_prefix text, delay interval, auto_resync boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM (
        SELECT p.reason_prefix, p.delay, p.auto_resync
        FROM resync.error_policy p
        WHERE p_sqlstate LIKE p.sqlstate_pattern || '%'
        ORDER BY length(p.sqlstate_pattern) DESC
        LIMIT 1
    ) found
    UNION ALL
    SELECT 'sync_error', interval '2 minutes', true
    WHERE NOT EXISTS (SELECT 1 FROM resync.error_policy p
                      WHERE p_sqlstate LIKE p.sqlstate_pattern || '%')
$$;

-- resync.record_sync_failure: after a failed inline sync.
-- Called by: resync.on_element_statement and resync.on_element_row, once their sync's
--   subtransaction has rolled back, with the UEs, their actions and the error.
-- Writes: a job per UE (resync.enqueue, reason '<prefix>_after_<action>', after the policy's
--   delay) unless the policy says auto_resync = false; one resync.sync_failures row per UE
--   either way (with the job id or NULL); one WARNING to the writer.
-- Why: UEs switched to auto_sync_enabled = false meanwhile are left out (the sync skips them
--   too). The error itself is not re-raised: the writer's change is kept, the job repairs the UE.
CREATE OR REPLACE FUNCTION resync.record_sync_failure(
    p_units bigint[], p_actions text[], p_sqlstate text, p_error text
) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_units   bigint[];
    v_actions text[];
    v_reasons text[];
    v_jobs    bigint[];
    v_policy  record;
BEGIN
    SELECT array_agg(a.unit ORDER BY a.unit), array_agg(a.action ORDER BY a.unit)
    INTO v_units, v_actions
    FROM unnest(p_units, p_actions) AS a(unit, action)
    JOIN {units} u ON {u.id} = a.unit
    WHERE {u.auto_sync_enabled};
    IF v_units IS NULL THEN
        RETURN;
    END IF;

    SELECT * INTO v_policy FROM resync.policy_for(p_sqlstate);
    v_reasons := array(SELECT v_policy.reason_prefix || '_after_' || a.action
                       FROM unnest(v_actions) WITH ORDINALITY AS a(action, i) ORDER BY a.i);
    IF v_policy.auto_resync THEN
        SELECT array_agg(e.job_id ORDER BY e.course_unit_id) INTO v_jobs
        FROM resync.enqueue(v_units, v_reasons, v_policy.delay, p_sqlstate, p_error) e;
    END IF;

    INSERT INTO resync.sync_failures (course_unit_id, action, reason, sqlstate, error, job_id)
    SELECT f.unit, f.action, f.reason, p_sqlstate, p_error, f.job
    FROM unnest(v_units, v_actions, v_reasons, v_jobs) AS f(unit, action, reason, job);

    RAISE WARNING 'ue-resync: sync of % course unit(s) failed (%: %); %', cardinality(v_units),
        p_sqlstate, p_error,
        CASE WHEN v_policy.auto_resync
             THEN 'resync queued in ' || v_policy.delay::text
             ELSE 'no automatic resync (resync.error_policy)' END;
END
$$;

-- resync.sync_or_defer: sync the given UEs now or queue them, as ue_resync.mode says.
-- Called by: resync.on_element_statement (a bulk statement), resync.on_element_row (a move
--   applied by a logical replication worker), resync.on_elements_truncated. p_units distinct
--   and sorted, p_actions aligned with them.
-- Does, by ue_resync.mode:
--   inline   resync.sync_units, waiting at most ue_resync.lock_timeout for the UE rows; on any
--            error resync.record_sync_failure (reason <prefix>_after_<action>);
--   deferred resync.enqueue of a job per UE (reason deferred_after_<action>);
--   off      nothing; resync.enqueue_drifted() catches up later.
-- Writes: the UEs (inline), resync.pgqueuer, resync.sync_failures (on failure).
CREATE OR REPLACE FUNCTION resync.sync_or_defer(p_units bigint[], p_actions text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode    text := coalesce(nullif(current_setting('ue_resync.mode', true), ''), 'inline');
    v_saved   text;
    v_state   text;
    v_message text;
BEGIN
    IF v_mode NOT IN ('inline', 'deferred', 'off') THEN
        RAISE EXCEPTION 'invalid value for ue_resync.mode: "%"', v_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use inline, deferred or off.';
    ELSIF v_mode = 'off' OR p_units IS NULL THEN
        RETURN;
    ELSIF v_mode = 'deferred' THEN
        PERFORM resync.enqueue(
            p_units,
            array(SELECT 'deferred_after_' || a FROM unnest(p_actions) a),
            interval '0', NULL, NULL, true);
        RETURN;
    END IF;

    -- Set outside the block, so a malformed ue_resync.lock_timeout is the writer's error
    -- ("invalid value for parameter lock_timeout") rather than a silent deferral; restored
    -- after it either way.
    v_saved := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout',
        coalesce(nullif(current_setting('ue_resync.lock_timeout', true), ''), '100ms'), true);
    BEGIN
        PERFORM resync.sync_units(p_units, false, true);
    EXCEPTION
        -- OTHERS does not include query_canceled: a statement_timeout must defer too.
        WHEN query_canceled THEN
            v_state := SQLSTATE; v_message := SQLERRM;
        WHEN OTHERS THEN
            v_state := SQLSTATE; v_message := SQLERRM;
    END;
    PERFORM set_config('lock_timeout', v_saved, true);

    IF v_state IS NOT NULL THEN
        PERFORM resync.record_sync_failure(p_units, p_actions, v_state, v_message);
    END IF;
END
$$;

-- Section: the statement path

-- resync.on_element_statement: the AFTER STATEMENT trigger function for INSERT, UPDATE, DELETE.
-- Called by: course_unit_elements_resync_statement_*, once per statement, with its transition
--   tables (new_rows, old_rows).
-- Does: (not called when resync.on_element_row handled the statement: the triggers' WHEN)
--   collects the UEs touched (both of them for a move; for an UPDATE only rows whose counted
--   fields moved), drops those with auto_sync_enabled = false, and hands them to
--   resync.sync_or_defer.
-- Writes: the UEs (inline), resync.pgqueuer, resync.sync_failures (on failure).
-- Why: jit = off, because a bulk statement's read of the transition tables costs more than
--   JIT's threshold and the compilation takes longer than the query it compiles (servers built
--   with LLVM). The UPDATE's join of old_rows to new_rows runs with enable_mergejoin off:
--   transition tables have no statistics, so the planner would sort both for a merge join
--   (spilling to disk for large statements) where a hash join on the distinct ids is cheaper;
--   set for that query only, after the early return (a SET clause would cost every single-row
--   statement a setting), and an error on the way ends the (sub)transaction, which restores it.
CREATE OR REPLACE FUNCTION resync.on_element_statement() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_mode     text;
    v_units    bigint[];
    v_actions  text[];
    v_joins    text;
BEGIN
    PERFORM set_config('ue_resync.statement_rows', 'done', true);
    -- Off: not even the transition tables are read (sync_or_defer checks the value).
    v_mode := coalesce(nullif(current_setting('ue_resync.mode', true), ''), 'inline');
    IF v_mode = 'off' THEN
        RETURN NULL;
    END IF;

    -- One (UE, action) per UE. An UPDATE only counts rows whose counted fields moved;
    -- a row that is both moved and soft-deleted is reported by its most telling action.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(t.unit ORDER BY t.unit), array_agg('created'::text ORDER BY t.unit)
        INTO v_units, v_actions
        FROM (SELECT DISTINCT {n.course_unit_id}::bigint AS unit
              FROM new_rows n JOIN {units} u ON {u.id} = {n.course_unit_id}
              WHERE {u.auto_sync_enabled}) t;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(t.unit ORDER BY t.unit), array_agg('force_deleted'::text ORDER BY t.unit)
        INTO v_units, v_actions
        FROM (SELECT DISTINCT {o.course_unit_id}::bigint AS unit
              FROM old_rows o JOIN {units} u ON {u.id} = {o.course_unit_id}
              WHERE {u.auto_sync_enabled}) t;
    ELSE
        -- The transition tables are joined once; each changed row names its new UE and,
        -- when it moved, its old one. By hash: see the header.
        v_joins := current_setting('enable_mergejoin');
        PERFORM set_config('enable_mergejoin', 'off', true);
        WITH changed AS MATERIALIZED (
            SELECT {o.course_unit_id}::bigint AS old_unit, {n.course_unit_id}::bigint AS new_unit,
                   CASE WHEN {o.deleted_at} IS NULL AND {n.deleted_at} IS NOT NULL THEN 1
                        WHEN {o.deleted_at} IS NOT NULL AND {n.deleted_at} IS NULL THEN 2
                        ELSE 3 END AS rank
            FROM old_rows o
            JOIN new_rows n ON {n.id} = {o.id}
            WHERE ({o.credits}, {o.hours_cm}, {o.hours_td}, {o.hours_tp}, {o.hours_total},
                   {o.status}, {o.deleted_at}, {o.course_unit_id})
                  IS DISTINCT FROM
                  ({n.credits}, {n.hours_cm}, {n.hours_td}, {n.hours_tp}, {n.hours_total},
                   {n.status}, {n.deleted_at}, {n.course_unit_id})
        ), per_unit AS (
            SELECT c.unit, (array['deleted', 'restored', 'updated'])[min(c.rank)] AS action
            FROM (SELECT new_unit AS unit, rank FROM changed WHERE new_unit IS NOT NULL
                  UNION ALL
                  SELECT old_unit, rank FROM changed
                  WHERE old_unit IS NOT NULL AND old_unit IS DISTINCT FROM new_unit) c
            GROUP BY c.unit
        )
        SELECT array_agg(p.unit ORDER BY p.unit), array_agg(p.action ORDER BY p.unit)
        INTO v_units, v_actions
        FROM per_unit p
        JOIN {units} u ON {u.id} = p.unit
        WHERE {u.auto_sync_enabled};
        PERFORM set_config('enable_mergejoin', v_joins, true);
    END IF;

    PERFORM resync.sync_or_defer(v_units, v_actions);
    RETURN NULL;
END
$$;

-- Section: the row path

-- resync.element_action: what a row's event did to its element, in the words of the job
-- reasons (`<prefix>_after_<action>`): created, force_deleted, or for an UPDATE deleted
-- (soft), restored or updated. p_was_live and p_is_live: deleted_at IS NULL before and after.
CREATE OR REPLACE FUNCTION resync.element_action(
    p_op text, p_was_live boolean, p_is_live boolean
) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE p_op
           WHEN 'INSERT' THEN 'created'
           WHEN 'DELETE' THEN 'force_deleted'
           ELSE CASE WHEN p_was_live AND NOT p_is_live THEN 'deleted'
                     WHEN p_is_live AND NOT p_was_live THEN 'restored'
                     ELSE 'updated' END
           END
$$;

-- resync.on_element_row: the AFTER ROW trigger function.
-- Called by: course_unit_elements_resync_row, at the end of the statement, for the statement's
--   first row only (its WHEN clause).
-- Does: unless the count says the statement wrote several rows, what
--   resync.on_element_statement would do for this one (both UEs of a move), and marks the
--   count done.
-- Writes: the UEs (inline), resync.pgqueuer (deferred), resync.sync_failures (on failure).
-- Why: inline, optimistically in one statement: the UE's sums with the UE row's xmin as this
--   statement's snapshot sees them, written only if the row is still that version. When
--   another sync changed the row since (one committed, or one we waited for), our sums may miss
--   that writer's elements: nothing is written, and resync.sync_units (lock first, then read)
--   does it. The values it writes are those of resync.sync_units and resync.expected.
--   Deferred, resync.enqueue's statement for one UE written out here rather than called: the
--   call (arrays, its settings and SECURITY DEFINER frame, its result set) cost more than the
--   insert itself, and this is the path an import's single-row writes take.
CREATE OR REPLACE FUNCTION resync.on_element_row() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_unit      bigint;
    v_saved     text;
    v_debounce  interval;
    v_max_wait  interval;
    v_reason    text;
    v_job       bigint;
    v_check     boolean;
    v_units     bigint[];
    v_actions   text[];
BEGIN
    -- (Each expression below is prepared again in every transaction: the common path, an
    -- inline single-row UPDATE, evaluates as few as it can.)
    -- The first row of its statement. A count of 2 still there means a statement of several
    -- rows and nothing since: the statement path syncs them all. Any other count (1, or done
    -- by a statement that a trigger ran since this one's rows, which may have counted 2 in
    -- between) and this row is synced here. Either way the count is done with.
    IF set_config('ue_resync.statement_rows',
                  CASE current_setting('ue_resync.statement_rows', true)
                  WHEN '2' THEN '2' ELSE 'done' END, true) = '2' THEN
        RETURN NULL;
    END IF;

    IF TG_OP = 'UPDATE' THEN
        IF ({OLD.credits}, {OLD.hours_cm}, {OLD.hours_td}, {OLD.hours_tp}, {OLD.hours_total},
            {OLD.status}, {OLD.deleted_at}, {OLD.course_unit_id})
           IS NOT DISTINCT FROM
           ({NEW.credits}, {NEW.hours_cm}, {NEW.hours_td}, {NEW.hours_tp}, {NEW.hours_total},
            {NEW.status}, {NEW.deleted_at}, {NEW.course_unit_id}) THEN
            RETURN NULL;  -- nothing counted changed
        ELSIF {OLD.course_unit_id} IS DISTINCT FROM {NEW.course_unit_id} THEN
            -- A move touches two UEs: both synced (or queued) here. (The apply worker of a
            -- logical replication subscriber fires row triggers only: this must be whole.)
            SELECT array_agg(m.unit ORDER BY m.unit), array_agg(m.action ORDER BY m.unit)
            INTO v_units, v_actions
            FROM (SELECT DISTINCT
                         unnest(array[{OLD.course_unit_id}, {NEW.course_unit_id}])::bigint AS unit,
                         resync.element_action(TG_OP, {OLD.deleted_at} IS NULL,
                                               {NEW.deleted_at} IS NULL) AS action) m
            JOIN {units} u ON {u.id} = m.unit
            WHERE {u.auto_sync_enabled};
            PERFORM resync.sync_or_defer(v_units, v_actions);
            RETURN NULL;
        END IF;
        v_unit := {NEW.course_unit_id};
    ELSIF TG_OP = 'INSERT' THEN
        v_unit := {NEW.course_unit_id};
    ELSE
        v_unit := {OLD.course_unit_id};
    END IF;

    IF coalesce(current_setting('ue_resync.mode', true), '') IN ('', 'inline') THEN
        -- Set outside the block, so a malformed ue_resync.lock_timeout is the writer's error
        -- ("invalid value for parameter lock_timeout") rather than a silent deferral; restored
        -- after it either way.
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout',
            coalesce(nullif(current_setting('ue_resync.lock_timeout', true), ''), '100ms'), true);
        BEGIN
            -- seen is the UE row as this statement's snapshot sees it, x what it should hold; u
            -- is the row the UPDATE locks. They are the same version unless another transaction
            -- updated the row since: then u is that newer version (read committed re-checks the
            -- WHERE on it) and nothing is written.
            UPDATE {units} w
            SET {units.last_element_sync} = greatest({w.last_element_sync}, clock_timestamp()),  -- when units.last_element_sync
                {rule.assign}
            FROM (SELECT x.*, {rule.distribution} AS hours_distribution
                  FROM (SELECT u.xmin AS seen,
                               {rule.expected}
                        FROM {units} u
                        CROSS JOIN LATERAL (
                            SELECT {rule.sums}
                            FROM {elements} e
                            WHERE {e.course_unit_id} = {u.id}
                              AND {rule.counted}) s
                        WHERE {u.id} = v_unit) x) x
            WHERE {w.id} = v_unit
              AND {w.auto_sync_enabled}
              AND w.xmin = x.seen;
            -- Not written: the row moved on, or the UE is gone or not synced automatically
            -- (resync.sync_units skips those as well).
            IF NOT FOUND THEN
                PERFORM resync.sync_units(array[v_unit], false, true);
            END IF;
        EXCEPTION
            -- OTHERS does not include query_canceled: a statement_timeout must defer too. The
            -- block's subtransaction is rolled back: the failure is recorded in the writer's.
            WHEN query_canceled THEN
                PERFORM resync.record_sync_failure(
                    array[v_unit],
                    array[resync.element_action(TG_OP, {OLD.deleted_at} IS NULL,
                                                {NEW.deleted_at} IS NULL)],
                    SQLSTATE, SQLERRM);
            WHEN OTHERS THEN
                PERFORM resync.record_sync_failure(
                    array[v_unit],
                    array[resync.element_action(TG_OP, {OLD.deleted_at} IS NULL,
                                                {NEW.deleted_at} IS NULL)],
                    SQLSTATE, SQLERRM);
        END;
        PERFORM set_config('lock_timeout', v_saved, true);
        RETURN NULL;
    ELSIF current_setting('ue_resync.mode', true) = 'off' THEN
        RETURN NULL;
    ELSIF current_setting('ue_resync.mode', true) <> 'deferred' THEN
        RAISE EXCEPTION 'invalid value for ue_resync.mode: "%"',
            current_setting('ue_resync.mode', true)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use inline, deferred or off.';
    END IF;

    -- Deferred: resync.enqueue's statement for one UE, with its deferred-mode rule (see its
    -- header; keep the two in step), written here: a call would cost more than the insert.
    -- Its statements are planned with enable_seqscan off, as resync.enqueue's are, for the
    -- same reason; restored after them (an error on the way ends the (sub)transaction, which
    -- restores it), not by a SET clause that every statement would pay for.
    v_saved := current_setting('enable_seqscan');
    PERFORM set_config('enable_seqscan', 'off', true);
    v_debounce := coalesce(nullif(current_setting('ue_resync.debounce', true), ''),
                           '2s')::interval;
    v_max_wait := coalesce(nullif(current_setting('ue_resync.debounce_max_wait', true), ''),
                           '60s')::interval;
    v_reason := 'deferred_after_' || resync.element_action(TG_OP, {OLD.deleted_at} IS NULL,
                                                           {NEW.deleted_at} IS NULL);
    INSERT INTO resync.pgqueuer AS q
        (priority, entrypoint, status, execute_after, payload, headers, resync_unit,
         resync_last_reason, resync_deadline)
    SELECT 0, 'resync_course_unit', 'queued',
           CASE WHEN v_debounce > interval '0' AND {u.last_job_sync} > now() - v_debounce
                THEN now() + least(v_debounce, v_max_wait)
                ELSE now() END,
           convert_to('{{"course_unit_id": ' || v_unit || ', "reason": "' || v_reason
                      || '", "sqlstate": null, "error": null}}', 'UTF8'),
           jsonb_build_object('course_unit_id', v_unit::text, 'reason', v_reason),
           v_unit,
           v_reason,
           CASE WHEN v_debounce > interval '0' THEN now() + v_max_wait END
    FROM {units} u
    WHERE {u.id} = v_unit AND {u.auto_sync_enabled}
    ON CONFLICT (resync_unit) WHERE entrypoint = 'resync_course_unit' AND status = 'queued'
    DO UPDATE SET
        execute_after = CASE
            WHEN excluded.resync_deadline IS NULL
            THEN least(q.execute_after, excluded.execute_after)
            WHEN q.execute_after <= now()
            THEN q.execute_after
            ELSE least(coalesce(q.resync_deadline, q.execute_after), excluded.resync_deadline,
                       greatest(CASE WHEN q.execute_after < q.resync_deadline
                                     THEN now() + v_debounce END,
                                CASE WHEN excluded.execute_after > now()
                                       OR (SELECT true FROM resync.pgqueuer p
                                           WHERE p.resync_unit = v_unit
                                             AND p.entrypoint = 'resync_course_unit'
                                             AND p.status = 'picked'
                                           LIMIT 1) IS NOT NULL
                                     THEN now() + least(v_debounce, v_max_wait)
                                     ELSE excluded.execute_after END))
            END,
        resync_deadline = CASE
            WHEN q.execute_after <= now()
              OR (q.resync_deadline IS NULL AND excluded.resync_deadline IS NULL)
            THEN q.resync_deadline
            ELSE least(coalesce(q.resync_deadline, q.execute_after),
                       coalesce(excluded.resync_deadline, excluded.execute_after))
            END,
        resync_events      = q.resync_events + 1,
        resync_last_reason = excluded.resync_last_reason
    RETURNING q.id, q.xmax = 0 AND q.resync_deadline IS NOT NULL AND q.execute_after <= now()
    INTO v_job, v_check;
    -- The second look, in a statement of its own (a snapshot taken after the insert): a pick
    -- of the UE, or a resync of it, that committed meanwhile makes the new job trail. A
    -- question first, the job written only when the answer is yes (a write is the dearer
    -- statement to start, and most new jobs stay due now).
    IF v_check THEN
        IF EXISTS (SELECT 1 FROM resync.pgqueuer p
                   WHERE p.resync_unit = v_unit
                     AND p.entrypoint = 'resync_course_unit'
                     AND p.status = 'picked')
           OR (SELECT {c.last_job_sync} > now() - v_debounce FROM {units} c
               WHERE {c.id} = v_unit) THEN
            UPDATE resync.pgqueuer q
            SET execute_after = now() + least(v_debounce, v_max_wait)
            WHERE q.id = v_job;
        END IF;
    END IF;
    PERFORM set_config('enable_seqscan', v_saved, true);
    RETURN NULL;
END
$$;

-- Section: TRUNCATE

-- resync.on_elements_truncated: the AFTER TRUNCATE trigger function of the elements table.
-- Called by: course_unit_elements_resync_truncate, once per TRUNCATE (course_units … CASCADE
--   truncates the elements too: the UEs are then gone, and nothing is left to sync).
-- Does: no element is left, so every UE whose stored values are not those of a UE without
--   elements (resync.drifted) is synced or queued as the mode says (resync.sync_or_defer,
--   action truncated).
CREATE OR REPLACE FUNCTION resync.on_elements_truncated() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_units bigint[];
BEGIN
    IF coalesce(nullif(current_setting('ue_resync.mode', true), ''), 'inline') = 'off' THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(d.course_unit_id ORDER BY d.course_unit_id) INTO v_units
    FROM resync.drifted() d;
    IF v_units IS NOT NULL THEN
        PERFORM resync.sync_or_defer(
            v_units, array_fill('truncated'::text, array[cardinality(v_units)]));
    END IF;
    RETURN NULL;
END
$$;

-- Section: the triggers

-- resync.on_statement_start: the BEFORE STATEMENT trigger function: the statement's count
-- starts at 0, or at 2 when a statement of this table is still writing its rows (a function in
-- its query runs this one): both take the statement path then. A function rather than a WHEN
-- clause: a WHEN is read back from its stored text and prepared at every statement, which
-- costs more than this call. Runs as the writer (no SECURITY DEFINER: it touches nothing but
-- the setting).
CREATE OR REPLACE FUNCTION resync.on_statement_start() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('ue_resync.statement_rows',
                       CASE current_setting('ue_resync.statement_rows', true)
                       WHEN '1' THEN '2' WHEN '2' THEN '2' ELSE '0' END, true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER course_unit_elements_resync_start
    BEFORE INSERT OR UPDATE OR DELETE ON {elements}
    FOR EACH STATEMENT
    EXECUTE FUNCTION resync.on_statement_start();

-- As each row is written (its function runs at the end of the statement): the first row of the
-- statement counts 1 and queues the event; any later one, or a row written while the count
-- reads anything but 0 (a statement in between marked it done), counts 2.
CREATE OR REPLACE TRIGGER course_unit_elements_resync_row
    AFTER INSERT OR UPDATE OR DELETE ON {elements}
    FOR EACH ROW
    WHEN (set_config('ue_resync.statement_rows',
                     CASE current_setting('ue_resync.statement_rows', true)
                     WHEN '0' THEN '1' ELSE '2' END, true) = '1')
    EXECUTE FUNCTION resync.on_element_row();

-- As the statement ends, before any row function runs: not called for a statement of one row,
-- which the row path handles.
CREATE OR REPLACE TRIGGER course_unit_elements_resync_statement_insert
    AFTER INSERT ON {elements}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('ue_resync.statement_rows', true) IS DISTINCT FROM '1')
    EXECUTE FUNCTION resync.on_element_statement();

CREATE OR REPLACE TRIGGER course_unit_elements_resync_statement_update
    AFTER UPDATE ON {elements}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('ue_resync.statement_rows', true) IS DISTINCT FROM '1')
    EXECUTE FUNCTION resync.on_element_statement();

CREATE OR REPLACE TRIGGER course_unit_elements_resync_statement_delete
    AFTER DELETE ON {elements}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    WHEN (current_setting('ue_resync.statement_rows', true) IS DISTINCT FROM '1')
    EXECUTE FUNCTION resync.on_element_statement();

CREATE OR REPLACE TRIGGER course_unit_elements_resync_truncate
    AFTER TRUNCATE ON {elements}
    FOR EACH STATEMENT EXECUTE FUNCTION resync.on_elements_truncated();

-- On a logical replication subscriber: the apply worker fires row triggers only (and TRUNCATE
-- triggers), with session_replication_role = replica, so none of the routing above happens
-- there. These two fire for it alone (ENABLE REPLICA: never in an ordinary session), every
-- applied row synced or queued by the row path. `ALTER TABLE … DISABLE TRIGGER` them on a
-- subscriber that receives the UEs' own rows too (docs/operations.md, "Logical replication").
-- The row one's WHEN keeps it idle in an ordinary session should `ENABLE TRIGGER ALL` have made
-- it fire there (`migrate --verify` says so, and migrate puts it back).
CREATE OR REPLACE TRIGGER course_unit_elements_resync_replica
    AFTER INSERT OR UPDATE OR DELETE ON {elements}
    FOR EACH ROW
    WHEN (current_setting('session_replication_role') = 'replica')
    EXECUTE FUNCTION resync.on_element_row();

CREATE OR REPLACE TRIGGER course_unit_elements_resync_replica_truncate
    AFTER TRUNCATE ON {elements}
    FOR EACH STATEMENT EXECUTE FUNCTION resync.on_elements_truncated();

ALTER TABLE {elements}
    ENABLE REPLICA TRIGGER course_unit_elements_resync_replica,
    ENABLE REPLICA TRIGGER course_unit_elements_resync_replica_truncate;
