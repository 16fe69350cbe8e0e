-- The LMD warnings of the UEs just resynced that appeared or changed since last noted: the
-- daemon logs these (resync.note_warnings).
SELECT course_unit_id, warning, detail
FROM resync.note_warnings(%(units)s::bigint[])
