SELECT resync.fail_unknown_entrypoints(%(worker)s::uuid)
