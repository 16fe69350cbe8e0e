SELECT resync.sync_now(%(unit)s::bigint) AS result
