-- Held to the end of the migrate transaction: a second installer waits here, then sees
-- what the first recorded and applies nothing of it.
SELECT pg_advisory_xact_lock(hashtext('ue-resync migrate'))
