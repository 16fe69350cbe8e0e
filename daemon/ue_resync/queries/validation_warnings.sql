-- The LMD warnings of the UEs just resynced, logged after the batch.
SELECT course_unit_id, warning, detail
FROM resync.lmd_warnings(%(units)s::bigint[])
