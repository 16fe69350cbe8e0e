SELECT queued, due, delayed, running, failed_total, failed_last_hour,
       coalesce(extract(epoch FROM oldest_due_age), 0)::float8 AS oldest_due_seconds
FROM resync.queue_status
