-- 0015: what the daemon's Prometheus metrics read that resync_worker could not.

-- ue_resync_enqueued_total is the last value of the queue's id sequence
-- (daemon/ue_resync/queries/enqueued_total.sql). SELECT reads it; it cannot take a number
-- (that needs USAGE or UPDATE).
GRANT SELECT ON SEQUENCE resync.pgqueuer_id_seq TO resync_worker;

-- ue_resync_unit_failures_24h_max counts the inline syncs that failed, as resync.alerts does
-- (queries/unit_failures_max.sql): which UE, when, which SQLSTATE; not the error text.
GRANT SELECT (course_unit_id, failed_at, sqlstate) ON resync.sync_failures TO resync_worker;
