-- The failures in the last 24 hours of the UE that failed most, not followed by a successful sync
-- (ue_resync_unit_failures_24h_max): what resync.alerts counts for unit_failures_24h.
SELECT coalesce(max(failures), 0)::float8 AS failures FROM resync.unit_failures()
