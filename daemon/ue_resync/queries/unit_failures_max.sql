-- The failures in the last 24 hours of the UE that failed most (ue_resync_unit_failures_24h_max):
-- the failures resync.alerts counts for unit_failures_24h (sql/definitions/monitoring_views.sql),
-- the daemon's failed attempts and the inline syncs that failed for another reason than
-- contention.
SELECT coalesce(max(n), 0)::float8 AS failures
FROM (
    SELECT f.course_unit_id, count(*) AS n
    FROM (
        SELECT r.course_unit_id
        FROM resync.job_runs r
        WHERE r.outcome IN ('retrying', 'failed', 'superseded')
          AND r.finished_at > now() - interval '24 hours'
          AND r.course_unit_id IS NOT NULL
        UNION ALL
        SELECT f.course_unit_id
        FROM resync.sync_failures f
        WHERE f.failed_at > now() - interval '24 hours'
          AND f.sqlstate <> '55P03' AND f.sqlstate NOT LIKE '40%'
    ) f
    GROUP BY f.course_unit_id
) per_unit
