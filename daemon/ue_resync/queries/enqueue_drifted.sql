SELECT resync.enqueue_drifted() AS queued
