-- The wake-up check's probe: a DELETE of no row fires the queue table's statement trigger
-- (tg_pgqueuer_changed, which notifies on INSERT, DELETE and TRUNCATE), whose NOTIFY must reach
-- the daemon's LISTEN (wakeups.py).
DELETE FROM resync.pgqueuer WHERE false
