SELECT course_unit_id, warning, detail
FROM resync.validation_warnings
WHERE course_unit_id = ANY (%(units)s::bigint[])
