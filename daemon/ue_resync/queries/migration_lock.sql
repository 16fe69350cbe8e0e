-- Held to the end of the migration's transaction: a second installer waits here, then sees
-- the version recorded and skips it.
SELECT pg_advisory_xact_lock(hashtext('ue-resync migrate'))
