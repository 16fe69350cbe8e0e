SELECT resync.request(%(unit)s::bigint, %(reason)s::text, make_interval(secs => %(delay)s)) AS job_id
