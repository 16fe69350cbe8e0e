INSERT INTO resync.workers (id, hostname, pid, version)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL
