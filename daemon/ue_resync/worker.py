"""`ue-resync work`: the daemon's supervisor, which survives its database.

One session is one connected life: check the schema, open the connections (queries, LISTEN, one
per resync slot), hand back the jobs a previous session held, then run pgqueuer's queue manager
(queue_manager.py) with the executor (executor.py) as its handler, and beside it the maintenance
(maintenance.py) and the check that its LISTEN hears its own NOTIFY (wakeups.py; the LISTEN
connection is UE_RESYNC_LISTEN_URL's when set). Losing the database ends the session; the
supervisor reconnects with a capped backoff and starts a new one under the same worker id. A
daemon that could not open its connections even once (a wrong URL, port or database, a password
refused) does not retry: it raises NeverConnected, and `ue-resync work` exits 1 with the server's
whole message, which systemd shows as the unit's failure.

`Worker.ready` is set while the daemon listens and its queue manager runs, and cleared when the
connection is lost and while it is reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid

import psycopg
from loguru import logger
from pgqueuer.domain import types

from ue_resync import installation, ledger, migrate, queue_manager, wakeups
from ue_resync.db import connect, connect_sync, describe, is_connection_loss
from ue_resync.executor import ConnectionLost, Executor
from ue_resync.log import one_line
from ue_resync.maintenance import Maintenance, mark_stopped
from ue_resync.metrics import Metrics
from ue_resync.queries import query
from ue_resync.settings import Settings
from ue_resync.systemd import ServiceManager

CATALOGUE_SHOWN = 5  # the differences logged one by one at start

# A promoted replica is found within 10 s plus one connect (docs/operations.md, "Failover").
RECONNECT_CAP = 10.0


class NeverConnected(Exception):
    """The daemon's first connections failed: `dsn` could not be reached, for `cause`."""

    def __init__(self, dsn: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.dsn = dsn
        self.cause = cause


class Worker:
    def __init__(self, settings: Settings, dsn: str, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.dsn = dsn
        self.id = uuid.uuid4()
        self.metrics = metrics or Metrics()
        self.service = ServiceManager()
        self.stopping = asyncio.Event()
        self.lost = asyncio.Event()
        self.ready = asyncio.Event()
        self.qm: queue_manager.ResyncQueueManager | None = None
        self.executor = Executor(settings, self.id, self.metrics, self._connection_lost)
        self.log = logger.bind(component="worker", worker_id=str(self.id)[:8])
        self.wakeups = wakeups.Wakeups(settings.sleep, settings.sleep_without_wakeups, self.log)
        self.maintenance = Maintenance(
            self.id, self.metrics, self.service, self.executor.counts, self.log
        )
        self.exit_reason = "stopped"
        self.ready_sent = False
        self.lost_reason = ""
        self.connected_once = False
        self.server = ""  # where the first connection went, for the start line

    async def run(self) -> int:
        """Work until SIGTERM/SIGINT, --max-time or (with --stop-when-empty) an empty queue."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, f"signal {signal.Signals(sig).name}")
        background = [asyncio.create_task(self.maintenance.watchdog(self.lost), name="watchdog")]
        if self.settings.max_time > 0:
            background.append(asyncio.create_task(self._max_time(), name="max_time"))
        delay = 0.5
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    await self._session()
                    if self.settings.stop_when_empty and not self.lost.is_set():
                        self.exit_reason = "queue drained"
                        break
                except (migrate.MigrationError, NeverConnected):
                    raise
                except Exception as exc:
                    if isinstance(exc, installation.MISSING):
                        self.log.error(
                            "the database lacks what ue-resync installs ({}): {}",
                            one_line(exc),
                            installation.REPAIR,
                        )
                    elif not self.lost.is_set() and not is_connection_loss(exc):
                        self.log.opt(exception=exc).error("worker error: {}", one_line(exc))
                    else:
                        cause = self.lost_reason or one_line(exc)
                        self.log.warning("database connection lost ({}); reconnecting", cause)
                if self.stopping.is_set():
                    break
                self.metrics.reconnects.inc()
                if time.monotonic() - started > 30:
                    delay = 0.5
                self.service.status(f"reconnecting to the database in {delay:.1f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, RECONNECT_CAP)
        finally:
            for task in background:
                task.cancel()
            self.service.stopping(f"stopped: {self.exit_reason}")
            self.service.close()
            if self.connected_once:
                mark_stopped(self.dsn, self.id)
        self.log.info("worker stopped ({})", self.exit_reason)
        return 0

    def stop(self, reason: str = "stop requested") -> None:
        if self.stopping.is_set():
            return
        self.exit_reason = reason
        self.log.info("stopping ({}): finishing the resyncs in flight", reason)
        self.service.stopping(f"stopping: {reason}")
        self.stopping.set()
        if self.qm is not None:
            self.qm.shutdown.set()

    def _check_schema(self) -> None:
        try:
            conn = connect_sync(self.dsn, "check")
        except psycopg.OperationalError as exc:
            self._unreachable(self.dsn, exc)
            raise
        with conn:
            self.server = describe(conn.info)
            ledger.check_current(conn)
            found = conn.execute(query("installation_differences")).fetchall()
            for _, _, problem in found[:CATALOGUE_SHOWN]:
                self.log.warning("catalogue: {}", problem)
            if found:
                self.log.warning(
                    "{} difference(s) with what ue-resync installed: `ue-resync migrate "
                    "--verify` lists them, `ue-resync migrate` repairs them",
                    len(found),
                )
            row = conn.execute(query("is_superuser")).fetchone()
            if row and row[0] and not self.ready_sent:
                self.log.warning(
                    "connected as a superuser: run the daemon as a role granted resync_worker"
                )

    async def _session(self) -> None:
        """One connected life: connections, QueueManager, until it stops or the DB is lost."""
        # A reconnection is any session after one that connected, ready or still starting.
        reconnecting = self.connected_once
        self.lost.clear()
        self.lost_reason = ""
        conns: list[psycopg.AsyncConnection] = []
        try:
            await asyncio.to_thread(self._check_schema)
            main = await self._open(self.dsn, "queue")
            conns.append(main)
            listen = await self._open(self.settings.listen_dsn(), "listen", listen=True)
            conns.append(listen)
            slots = [
                await self._open(self.dsn, f"resync-{n}") for n in range(self.settings.concurrency)
            ]
            conns.extend(slots)
            self.connected_once = True
            self.executor.use(slots)
            released = await self._release_held_jobs(main)
            if reconnecting:
                self.log.info("reconnected to the database; {} held job(s) handed back", released)
            await self.maintenance.heartbeat(main)

            driver = queue_manager.SplitDriver(main, listen, self._connection_lost, self._listening)
            qm = queue_manager.queue_manager(
                driver, types.QueueManagerId(self.id), self.executor.handle
            )
            qm.wakeups = self.wakeups
            self.qm = qm
            if self.stopping.is_set():
                return
            background = [
                asyncio.create_task(
                    self.maintenance.loop(main, self._connection_lost), name="housekeeping"
                ),
                # Once listening (self.ready), the LISTEN is checked with a NOTIFY to itself.
                asyncio.create_task(
                    self.wakeups.watch(qm, self.ready, driver.probe_table), name="wakeups_check"
                ),
            ]
            try:
                await queue_manager.run(qm, self.settings)
            finally:
                for task in background:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self.lost.is_set():
                raise ConnectionLost("the database connection was lost")
        finally:
            self.ready.clear()
            self.qm = None
            for c in conns:
                with contextlib.suppress(Exception):
                    await c.close()

    async def _open(self, dsn: str, role: str, listen: bool = False) -> psycopg.AsyncConnection:
        try:
            return await connect(dsn, role, listen=listen)
        except psycopg.OperationalError as exc:
            self._unreachable(dsn, exc)
            raise

    def _unreachable(self, dsn: str, exc: psycopg.OperationalError) -> None:
        """Before the daemon ever held its connections, a failed connect ends it."""
        if not self.connected_once:
            raise NeverConnected(dsn, exc) from exc

    def _listening(self) -> None:
        """The queue manager listens: the daemon is ready (READY=1 to systemd the first time)."""
        if self.lost.is_set() or self.ready.is_set():
            return
        self.ready.set()
        status = (
            f"ready: worker {str(self.id)[:8]}, concurrency {self.settings.concurrency}, "
            f"tries {self.settings.tries}"
        )
        if self.ready_sent:
            self.service.status(status)
            return
        self.ready_sent = True
        self.service.ready(status)
        self.log.info(
            "worker started (pid {}, {}, sleep {} s, tries {}, backoff {}, timeout {} s)",
            os.getpid(),
            self.server,
            self.settings.sleep,
            self.settings.tries,
            ",".join(f"{b:g}" for b in self.settings.backoff),
            self.settings.timeout,
        )

    def _connection_lost(self, exc: BaseException) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = one_line(exc)
        self.ready.clear()
        self.lost.set()
        if self.qm is not None:
            self.qm.shutdown.set()

    async def _release_held_jobs(self, conn: psycopg.AsyncConnection) -> int:
        """Hand back the jobs this worker id held when its last session lost the database."""
        cur = await conn.execute(query("release_jobs"), {"worker": self.id})
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _max_time(self) -> None:
        await asyncio.sleep(self.settings.max_time)
        self.stop(f"--max-time {self.settings.max_time:g} s reached")
