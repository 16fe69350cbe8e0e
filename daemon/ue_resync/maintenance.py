"""What a running daemon does besides resyncing: its heartbeat in `resync.workers`, pruning the
history past retention, failing jobs of an unknown entrypoint, the queue gauges and the systemd
STATUS line, the systemd watchdog, and its row marked stopped on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from ue_resync import __version__
from ue_resync.db import connect_sync, is_connection_loss
from ue_resync.executor import Counts
from ue_resync.log import one_line
from ue_resync.metrics import Metrics
from ue_resync.queries import query
from ue_resync.systemd import ServiceManager, watchdog_interval

EVERY = 5.0
PRUNE_EVERY = 3600.0
# The watchdog stays fed while the database answered within this many seconds.
HEALTHY_WITHIN = 60.0


class Maintenance:
    def __init__(
        self,
        worker_id: uuid.UUID,
        metrics: Metrics,
        service: ServiceManager,
        counts: Counts,
        log: Any,
    ) -> None:
        self.worker_id = worker_id
        self.metrics = metrics
        self.service = service
        self.counts = counts
        self.log = log
        self.last_db_ok = time.monotonic()

    async def heartbeat(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(
            query("worker_heartbeat"),
            {
                "id": self.worker_id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
            },
        )
        self.last_db_ok = time.monotonic()
        self.metrics.heartbeat()

    async def loop(
        self, conn: psycopg.AsyncConnection, on_lost: Callable[[BaseException], None]
    ) -> None:
        """Every few seconds until cancelled, or until `conn` is lost (then `on_lost`)."""
        next_prune = time.monotonic() + 60  # not at once: a restart loop must not prune in a loop
        while True:
            try:
                await self.heartbeat(conn)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    cur = await conn.execute(query("prune_history"))
                    row = await cur.fetchone()
                    self.log.info("pruned {} history row(s) past retention", row[0] if row else 0)
                cur = await conn.execute(
                    query("fail_unknown_entrypoints"), {"worker": self.worker_id}
                )
                row = await cur.fetchone()
                if row and row[0]:
                    self.log.error("failed {} job(s) with an unknown entrypoint", row[0])
                await self.gauges(conn)
            except Exception as exc:
                if is_connection_loss(exc, conn):
                    on_lost(exc)
                    return
                self.log.warning("housekeeping failed: {}", one_line(exc))
            await asyncio.sleep(EVERY)

    async def gauges(self, conn: psycopg.AsyncConnection) -> None:
        cur = await conn.execute(query("queue_gauges"))
        row = await cur.fetchone()
        if row is None:
            return
        queued, due, delayed, running, failed, failed_last_hour, oldest = row
        for state, value in (
            ("queued", queued),
            ("due", due),
            ("delayed", delayed),
            ("running", running),
            ("failed", failed),
        ):
            self.metrics.queue_depth.labels(state).set(value)
        self.metrics.oldest_due.set(oldest)
        self.metrics.failed_last_hour.set(failed_last_hour)
        c = self.counts
        self.service.status(
            f"{c.succeeded} resynced, {c.retried} retried, {c.failed} failed; "
            f"queue: {due} due, {delayed} delayed, {running} running"
        )
        if not self.metrics.served:
            # Only the metrics read these: every queued job's payload (~1 s every 5 s with
            # 250,000 jobs queued, auto_explain, PostgreSQL 15) and the last day of job runs.
            return
        cur = await conn.execute(query("deferred_gauges"))
        self.metrics.deferred.clear()
        absorbed_total = 0.0
        for reason, sqlstate, count, absorbed in await cur.fetchall():
            self.metrics.deferred.labels(reason, sqlstate).set(count)
            absorbed_total += absorbed
        self.metrics.coalesced.set(absorbed_total)
        cur = await conn.execute(query("enqueued_total"))
        row = await cur.fetchone()
        self.metrics.enqueued.value = row[0] if row else None
        cur = await conn.execute(query("unit_failures_max"))
        row = await cur.fetchone()
        self.metrics.unit_failures.set(row[0] if row else 0)

    async def watchdog(self, reconnecting: asyncio.Event) -> None:
        """Feed systemd's watchdog while healthy: the loop turns and, unless `reconnecting`,
        the database answered lately. Returns at once when no watchdog is armed."""
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            if reconnecting.is_set() or time.monotonic() - self.last_db_ok < HEALTHY_WITHIN:
                self.service.watchdog()
            await asyncio.sleep(interval)


def mark_stopped(dsn: str, worker_id: uuid.UUID) -> None:
    """Best effort: a daemon that cannot reach its database on the way out is still stopped."""
    with contextlib.suppress(Exception), connect_sync(dsn, "stop", timeout=2) as conn:
        conn.execute(query("worker_stopped"), {"id": worker_id})
