SELECT resync.retry_job($1::bigint, $2::interval, $3::jsonb)
