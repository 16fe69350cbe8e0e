"""Prometheus metrics of one daemon, served by `ue-resync work --metrics-port`.

Two kinds: what this daemon did (counters and histograms, reset when it restarts) and what the
database shows (gauges and `ue_resync_enqueued_total`, the same in every daemon of a database,
refreshed by the housekeeping loop). docs/operations.md lists them all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ue_resync import __version__

# From a job picked as it falls due (a few ms) to one that waited past the 5-minute alert.
START_DELAY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
)  # fmt: skip


class DatabaseCounter(Collector):
    """A counter the database keeps: exported as read, and not at all before the first read
    (a first sample of 0 would make rate() see the whole history arrive at once)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value: float | None = None

    def collect(self) -> Iterator[Metric]:
        if self.value is not None:
            yield CounterMetricFamily(self.name, self.documentation, value=self.value)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation)


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
        self.start_delay = Histogram(
            "ue_resync_start_delay_seconds",
            "Time from a job's due time to its pick by this daemon",
            buckets=START_DELAY_BUCKETS,
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
        self.failed_last_hour = Gauge(
            "ue_resync_failed_jobs_last_hour",
            "Jobs failed in the last hour and still failed",
            registry=r,
        )
        self.unit_failures = Gauge(
            "ue_resync_unit_failures_24h_max",
            "Failures in the last 24 hours of the course unit that failed most",
            registry=r,
        )
        self.enqueued = DatabaseCounter(
            "ue_resync_enqueued",
            "Resync requests that reached the queue: new jobs and events absorbed by a queued job",
        )
        r.register(self.enqueued)
        self._heartbeat_at = time.monotonic()
        Gauge(
            "ue_resync_heartbeat_age_seconds",
            "Seconds since this daemon last wrote its heartbeat to the database",
            registry=r,
        ).set_function(lambda: time.monotonic() - self._heartbeat_at)
        self.reconnects = Counter(
            "ue_resync_reconnects_total", "Reconnections to the database", registry=r
        )
        Info("ue_resync_build", "ue-resync build information", registry=r).info(
            {"version": __version__}
        )

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)
        self.served = True

    def picked(self, due: datetime, picked: datetime) -> None:
        """A job due at `due` was picked at `picked` (both the database's clock)."""
        self.start_delay.observe(max(0.0, (picked - due).total_seconds()))

    def heartbeat(self) -> None:
        """The daemon has just written its heartbeat."""
        self._heartbeat_at = time.monotonic()
