SELECT course_unit_id, code,
       stored_credits, expected_credits, stored_hours_total, expected_hours_total,
       stored_elements_count, expected_elements_count
FROM resync.drift
ORDER BY course_unit_id
