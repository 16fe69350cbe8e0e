SELECT run_id, course_unit_id, code, outcome, changes,
       extract(epoch FROM duration)::float8 AS seconds
FROM resync.complete_runs(%(run_ids)s::bigint[], %(units)s::bigint[])
