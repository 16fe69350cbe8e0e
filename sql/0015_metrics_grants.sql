-- 0015: what the daemon's Prometheus metrics read that resync_worker could not.

-- ue_resync_enqueued_total is the last value of the queue's id sequence
-- (daemon/ue_resync/queries/enqueued_total.sql). SELECT reads it; it cannot take a number
-- (that needs USAGE or UPDATE).
GRANT SELECT ON SEQUENCE resync.pgqueuer_id_seq TO resync_worker;
