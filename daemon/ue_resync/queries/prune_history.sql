SELECT resync.prune_history() AS deleted
