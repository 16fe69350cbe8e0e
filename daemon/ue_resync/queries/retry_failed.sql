SELECT resync.retry_failed(%(job_id)s::bigint) AS count
