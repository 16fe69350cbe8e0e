UPDATE resync.workers SET stopped_at = now() WHERE id = %(id)s
