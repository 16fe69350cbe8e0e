SELECT job_id, course_unit_id, reason, execute_after FROM resync.clear_queue()
