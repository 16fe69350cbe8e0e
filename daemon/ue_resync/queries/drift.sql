-- The drifted UEs with the columns that differ ({"column": [stored, expected]}), for
-- `ue-resync check` and migrate's report.
SELECT course_unit_id, code, differences
FROM resync.drift
ORDER BY course_unit_id
