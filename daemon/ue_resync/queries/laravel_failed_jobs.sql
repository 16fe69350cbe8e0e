-- import-laravel: the rows of Laravel's failed_jobs table that may be the job class, locked
-- until the import commits. failed_at is a timestamp without time zone, written in the
-- application's timezone (config app.timezone). {failed_jobs}: the table, an identifier.
SELECT id, uuid::text, connection, queue, payload, exception,
       failed_at AT TIME ZONE %(timezone)s AS failed_at
FROM {failed_jobs}
WHERE strpos(payload, %(short_name)s) > 0
ORDER BY id
FOR UPDATE
