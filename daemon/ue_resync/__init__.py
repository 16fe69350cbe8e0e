"""ue-resync: keeps course units consistent with their elements, repairing what could not be
synced at once through deferred, retried resyncs on a pgqueuer queue."""

__version__ = "0.1.0"
