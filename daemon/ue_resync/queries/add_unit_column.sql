-- A sync timestamp the UEs lack (mapping.ADDED_COLUMNS), added as the replaced system's own
-- migration added last_job_sync: nullable, no default, so no row is rewritten.
ALTER TABLE {table} ADD COLUMN {column} timestamptz
