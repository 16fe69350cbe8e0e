"""Prometheus metrics of one daemon, served by `ue-resync work --metrics-port`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from ue_resync import __version__


class Metrics:
    def __init__(self) -> None:
        # Whether anyone can read them: gauges that cost a scan of the queue are only
        # refreshed when served.
        self.served = False
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.resyncs = Counter(
            "ue_resync_resyncs_total", "Resync attempts by outcome", ["outcome"], registry=r
        )
        self.run_seconds = Histogram(
            "ue_resync_resync_duration_seconds",
            "Run time of one resync attempt",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.deferred = Gauge(
            "ue_resync_deferred_jobs",
            "Queued jobs by reason family and SQLSTATE",
            ["reason", "sqlstate"],
            registry=r,
        )
        self.retries = Counter("ue_resync_retries_total", "Attempts that were retried", registry=r)
        self.failures = Counter("ue_resync_failures_total", "Jobs that ended failed", registry=r)
        self.coalesced = Gauge(
            "ue_resync_coalesced_events", "Events absorbed by jobs still queued", registry=r
        )
        self.queue_depth = Gauge("ue_resync_queue_depth", "Jobs by state", ["state"], registry=r)
        self.oldest_due = Gauge(
            "ue_resync_oldest_due_age_seconds", "Age of the oldest due job", registry=r
        )
        self.reconnects = Counter(
            "ue_resync_reconnects_total", "Reconnections to the database", registry=r
        )
        Info("ue_resync_build", "ue-resync build information", registry=r).info(
            {"version": __version__}
        )

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)
        self.served = True
