-- A job that cannot run (bad payload): one closed run row saying why.
INSERT INTO resync.job_runs
    (job_id, attempt, reason, worker_id, outcome, started_at, finished_at, error)
VALUES (%(job_id)s, %(attempt)s, NULL, %(worker)s, 'invalid', statement_timestamp(),
        statement_timestamp(), %(error)s)
