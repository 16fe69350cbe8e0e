-- Queued jobs by reason family (the reason without its _after_<action> suffix) and SQLSTATE,
-- with the events they absorbed beyond the first (coalescing).
SELECT split_part(coalesce(headers ->> 'reason', 'unknown'), '_after_', 1) AS reason,
       coalesce(resync.payload_json(payload) ->> 'sqlstate', '') AS sqlstate,
       count(*)::float8 AS jobs,
       coalesce(sum(CASE WHEN headers ->> 'events' ~ '^[0-9]{1,9}$'
                         THEN (headers ->> 'events')::integer - 1 ELSE 0 END), 0)::float8
           AS absorbed
FROM resync.pgqueuer
WHERE status = 'queued' AND entrypoint = 'resync_course_unit'
GROUP BY 1, 2
