SELECT job_id, course_unit_id, reason, attempts, last_error, failed_at
FROM resync.failed_jobs
ORDER BY job_id
