-- Resync requests that reached the queue (ue_resync_enqueued_total): each INSERT into
-- resync.pgqueuer takes a number from its id sequence, a coalesced one (ON CONFLICT … DO UPDATE)
-- included, and a sequence never goes back, so its last value is a counter. A request rolled
-- back with its writer's transaction has taken its number too.
SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END::float8 AS enqueued
FROM resync.pgqueuer_id_seq s
