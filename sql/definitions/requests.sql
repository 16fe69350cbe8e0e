-- Manual requests: what an operator or an application types to ask for a resync.
--
--   INSERT INTO resync.requests (course_unit_id, reason, run_at)
--   VALUES (42, 'manual_trigger', now() + interval '1 hour');
--   SELECT resync.request(42, 'reason', interval '2 minutes');   -- returns the job id

-- resync.on_request: the BEFORE INSERT row trigger function of resync.requests.
-- Called by: requests_enqueue, for each request row (an INSERT, or resync.request()).
-- Writes: resync.pgqueuer through resync.enqueue (coalesced, due at run_at; run_at in the past
--   means now), and the job id into the request row (NEW.job_id).
-- Why: it rejects a NULL or unknown course_unit_id, a bad reason or a run_at more than a year
--   ahead with one clear error, and nothing is queued: the whole INSERT fails.
CREATE OR REPLACE FUNCTION resync.on_request() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.course_unit_id IS NULL THEN
        RAISE EXCEPTION 'resync.requests: course_unit_id is required'
            USING ERRCODE = 'not_null_violation',
                  HINT = 'INSERT INTO resync.requests (course_unit_id) VALUES (<id of a course_units row>)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {units} u WHERE {u.id} = NEW.course_unit_id) THEN
        RAISE EXCEPTION 'resync.requests: course unit % does not exist', NEW.course_unit_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'SELECT ' || {units.id.name} || ' FROM ' || {units.table.name} || ' lists the units.';
    END IF;
    IF NEW.reason IS NULL OR length(NEW.reason) NOT BETWEEN 1 AND 100
       OR NEW.reason ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'resync.requests: reason must be 1 to 100 characters, no control character'
            USING ERRCODE = 'check_violation';
    END IF;

    -- A job due never (infinity, year 9999) would sit queued forever and hide the UE from
    -- the drift alert; a resync asked for more than a year ahead is a typo.
    IF NOT isfinite(NEW.run_at) OR NEW.run_at > now() + interval '1 year' THEN
        RAISE EXCEPTION 'resync.requests: run_at % is more than a year ahead', NEW.run_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a time within the next year, e.g. now() + interval ''1 hour''.';
    END IF;

    SELECT e.job_id INTO NEW.job_id
    FROM resync.enqueue(array[NEW.course_unit_id], array[NEW.reason],
                        greatest(coalesce(NEW.run_at, now()) - now(), interval '0')) e;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER requests_enqueue
    BEFORE INSERT ON resync.requests
    FOR EACH ROW EXECUTE FUNCTION resync.on_request();

-- resync.request: the function form of a request (the old ->delay()); returns the job id. A
-- negative delay is refused, as the CLI's --delay refuses it.
CREATE OR REPLACE FUNCTION resync.request(
    p_course_unit_id bigint,
    p_reason text DEFAULT 'manual_trigger',
    p_delay interval DEFAULT interval '0'
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job bigint;
BEGIN
    IF p_delay < interval '0' THEN
        RAISE EXCEPTION 'resync.request: delay % is negative', p_delay
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a delay of zero or more, e.g. interval ''2 minutes''.';
    END IF;
    -- SECURITY DEFINER: current_user would be this function's owner; session_user is the
    -- role that asked.
    INSERT INTO resync.requests (course_unit_id, reason, run_at, requested_by)
    VALUES (p_course_unit_id, coalesce(p_reason, 'manual_trigger'),
            now() + coalesce(p_delay, interval '0'), session_user)
    RETURNING job_id INTO v_job;
    RETURN v_job;
END
$$;
