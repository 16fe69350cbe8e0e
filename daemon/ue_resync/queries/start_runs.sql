SELECT job_id, run_id, attempt
FROM resync.start_runs(%(job_ids)s::bigint[], %(units)s::bigint[], %(reasons)s::text[], %(worker)s::uuid)
