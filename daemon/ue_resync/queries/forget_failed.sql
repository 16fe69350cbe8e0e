SELECT resync.forget_failed(%(job_id)s::bigint) AS count
