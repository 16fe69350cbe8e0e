SELECT resync.release_jobs(%(worker)s::uuid)
