SELECT queued, due, delayed, running, failed_last_hour, failed_total, live_workers,
       extract(epoch FROM oldest_due_age)::float8 AS oldest_due_age_seconds,
       extract(epoch FROM run_time_avg)::float8   AS run_time_avg_seconds,
       extract(epoch FROM run_time_p95)::float8   AS run_time_p95_seconds
FROM resync.queue_status
