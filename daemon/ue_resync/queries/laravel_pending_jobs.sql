-- import-laravel: the rows of Laravel's jobs table that may be the job class (its short name
-- appears in the payload), locked until the import commits. {jobs}: the table, an identifier.
SELECT id, payload, attempts, reserved_at IS NOT NULL AS reserved,
       to_timestamp(available_at) AS due
FROM {jobs}
WHERE strpos(payload, %(short_name)s) > 0
ORDER BY id
FOR UPDATE
