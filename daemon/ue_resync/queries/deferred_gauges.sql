-- Queued jobs by reason family (the reason without its _after_<action> suffix) and SQLSTATE,
-- with the events they absorbed beyond the first (coalescing).
SELECT split_part(coalesce(headers ->> 'reason', 'unknown'), '_after_', 1) AS reason,
       coalesce(resync.payload_json(payload) ->> 'sqlstate', '') AS sqlstate,
       count(*)::float8 AS jobs,
       coalesce(sum(greatest(resync_events - 1, 0)), 0)::float8 AS absorbed
FROM resync.pgqueuer
WHERE status = 'queued' AND entrypoint = 'resync_course_unit'
GROUP BY 1, 2
