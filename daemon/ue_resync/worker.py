"""`ue-resync work`: pgqueuer's QueueManager turned into a daemon that survives its database.

Wiring, not SQL: pgqueuer dequeues `resync_course_unit` jobs (NOTIFY wake-up on a connection of
its own, a timer for the next deferred job, polling every --sleep as the fallback); the handler
parses the payload and hands the UE to a batcher, which resyncs every UE that arrived together in
one transaction (resync.py); the outcome becomes pgqueuer's: success, RetryRequested with the
backoff delay (a durable row with a future execute_after), or a failure kept as status 'failed'.
Losing the database ends the QueueManager; the supervisor loop reconnects with a capped backoff,
hands back the jobs it held, and starts a new one under the same worker id."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
from loguru import logger
from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.core.qm import QueueManager
from pgqueuer.core.tm import TaskManager
from pgqueuer.domain import errors, models, types
from pgqueuer.domain.settings import DBSettings
from pgqueuer.ports.driver import NotifyCallback

from ue_resync import __version__, jobs, migrate, resync, wakeups
from ue_resync.db import connect, connect_sync, is_connection_loss
from ue_resync.metrics import Metrics
from ue_resync.queries import query, text
from ue_resync.sdnotify import Notifier, watchdog_interval
from ue_resync.settings import Settings

CHANNEL = "ue_resync"
PGQ_SETTINGS = DBSettings(db_schema="resync", channel=types.Channel(CHANNEL))
CONNECTION_LOST = "connection_lost"
HOUSEKEEPING_EVERY = 5.0
PRUNE_EVERY = 3600.0
RETRY_JOB_TRIES = 5
# A promoted replica is found within 10 s plus one connect (docs/operations.md, "Failover").
RECONNECT_CAP = 10.0


class JobFailed(Exception):
    """Raised to pgqueuer for a job that ends failed (kept with status 'failed')."""


class ConnectionLost(Exception):
    """The database went away under a resync; the supervisor reconnects."""


class SplitDriver(PsycopgDriver):
    """pgqueuer's psycopg driver with LISTEN on a second connection.

    The stock driver waits for notifications on the connection its queries use, holding that
    connection's lock for up to a second at a time, which delays the dequeue of a due job by as
    much. Here queries and notifications never wait for each other."""

    def __init__(
        self, connection: psycopg.AsyncConnection, listen: psycopg.AsyncConnection, on_lost: Any
    ) -> None:
        super().__init__(connection)
        self._listen = listen
        self._on_lost = on_lost
        self.listening = asyncio.Event()  # set once a LISTEN is in place

    async def add_listener(self, channel: str, callback: NotifyCallback) -> None:
        if channel not in self._listeners:
            await self._listen.execute(
                psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
            )
            self._listeners[channel] = []
        self._listeners[channel].append(callback)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self.watch_notifies(), name="ue_resync_listener")
            self._tm.add(self._watcher)
        self.listening.set()

    async def watch_notifies(self) -> None:
        try:
            while not self.shutdown.is_set():
                async for note in self._listen.notifies(timeout=0.5):
                    for callback in list(self._listeners.get(note.channel, [])):
                        callback(note.payload)
        except (psycopg.Error, OSError) as exc:
            self._on_lost(exc)


@dataclasses.dataclass
class ResyncQueries(Queries):
    """pgqueuer's queries with a coalescing-aware retry: a job re-queued while its UE already has
    a queued job folds into that one instead of breaking the one-queued-job-per-UE index."""

    async def retry_job(
        self, job: models.Job, delay: timedelta, traceback_record: models.TracebackRecord | None
    ) -> None:
        context = traceback_record.additional_context if traceback_record else None
        if context and context.get("reason") == CONNECTION_LOST:
            # Not an attempt: the job stays picked by this worker, which hands it back
            # (resync.release_jobs) once it has reconnected.
            return
        # pgqueuer marks a job failed when this raises: a deadlock or a lock timeout here
        # (against a writer coalescing into the UE's queued job) is transient, so try again.
        for attempt in range(1, RETRY_JOB_TRIES + 1):
            try:
                await self.driver.execute(
                    text("retry_job"),
                    job.id,
                    delay,
                    traceback_record.model_dump_json() if traceback_record else None,
                )
                return
            except psycopg.errors.OperationalError as exc:
                transient = (exc.sqlstate or "").startswith("40") or exc.sqlstate == "55P03"
                if not transient or attempt == RETRY_JOB_TRIES:
                    raise
                await asyncio.sleep(0.05 * attempt)


class ResyncQueueManager(QueueManager):
    """--stop-when-empty drains what is due, not what is delayed (pgqueuer's drain waits for
    every queued job, a retry due in two minutes included). While the daemon's wake-ups fail
    (wakeups.py), the wait between two dequeues is capped."""

    wakeups: wakeups.Wakeups | None = None

    async def _effective_dequeue_timeout(self, dequeue_timeout: timedelta) -> timedelta:
        timeout = await super()._effective_dequeue_timeout(dequeue_timeout)
        cap = self.wakeups.poll_interval() if self.wakeups is not None else None
        return timeout if cap is None else min(timeout, cap)

    async def _maybe_drain_shutdown(
        self, mode: types.QueueExecutionMode, task_manager: TaskManager
    ) -> None:
        if mode is not types.QueueExecutionMode.drain:
            return
        if task_manager.tasks:
            await asyncio.sleep(0)
        if task_manager.tasks:
            return
        if await self.queries.eligible_queued_work(list(self.entrypoint_registry)) == 0:
            self.shutdown.set()


@dataclasses.dataclass
class _Item:
    job: models.Job
    payload: jobs.ResyncPayload
    future: asyncio.Future[resync.Synced]
    run: resync.Run | None = None


class Worker:
    def __init__(self, settings: Settings, dsn: str, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.dsn = dsn
        self.id = uuid.uuid4()
        self.metrics = metrics or Metrics()
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self.lost = asyncio.Event()
        self.qm: ResyncQueueManager | None = None
        self.pool: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        self.pending: list[_Item] = []
        self.flusher: asyncio.Task[None] | None = None
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.counts = {"succeeded": 0, "retried": 0, "failed": 0}
        self.last_db_ok = time.monotonic()
        self.exit_reason = "stopped"
        self.ready_sent = False
        self.lost_reason = ""
        self.log = logger.bind(component="worker", worker_id=str(self.id)[:8])
        self.wakeups = wakeups.Wakeups(settings.sleep, settings.sleep_without_wakeups, self.log)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Work until SIGTERM/SIGINT, --max-time or (with --stop-when-empty) an empty queue."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, f"signal {signal.Signals(sig).name}")
        background = [asyncio.create_task(self._watchdog(), name="watchdog")]
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
                except migrate.MigrationError:
                    raise
                except Exception as exc:
                    if not self.lost.is_set() and not is_connection_loss(exc):
                        self.log.opt(exception=exc).error("worker error: {}", _one_line(exc))
                    else:
                        cause = self.lost_reason or _one_line(exc)
                        self.log.warning("database connection lost ({}); reconnecting", cause)
                if self.stopping.is_set():
                    break
                self.metrics.reconnects.inc()
                if time.monotonic() - started > 30:
                    delay = 0.5
                self.notifier.status(f"reconnecting to the database in {delay:.1f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, RECONNECT_CAP)
        finally:
            for task in background:
                task.cancel()
            self.notifier.stopping(f"stopped: {self.exit_reason}")
            self.notifier.close()
            self._mark_stopped()
        self.log.info("worker stopped ({})", self.exit_reason)
        return 0

    def stop(self, reason: str = "stop requested") -> None:
        if self.stopping.is_set():
            return
        self.exit_reason = reason
        self.log.info("stopping ({}): finishing the resyncs in flight", reason)
        self.notifier.stopping(f"stopping: {reason}")
        self.stopping.set()
        if self.qm is not None:
            self.qm.shutdown.set()

    def _check_schema(self) -> None:
        with connect_sync(self.dsn, "check") as conn:
            migrate.check_current(conn)
            row = conn.execute(query("is_superuser")).fetchone()
            if row and row[0] and not self.ready_sent:
                self.log.warning(
                    "connected as a superuser: run the daemon as a role granted resync_worker"
                )

    async def _session(self) -> None:
        """One connected life: connections, QueueManager, until it stops or the DB is lost."""
        first = not self.ready_sent
        self.lost.clear()
        self.lost_reason = ""
        conns: list[psycopg.AsyncConnection] = []
        try:
            await asyncio.to_thread(self._check_schema)
            main = await connect(self.dsn, "queue")
            conns.append(main)
            listen = await connect(self.settings.listen_dsn(), "listen", listen=True)
            conns.append(listen)
            self.pool = asyncio.Queue()
            for n in range(self.settings.concurrency):
                c = await connect(self.dsn, f"resync-{n}")
                conns.append(c)
                self.pool.put_nowait(c)
            released = await self._released(main)
            if not first:
                self.log.info("reconnected to the database; {} held job(s) handed back", released)
            await self._heartbeat(main)

            driver = SplitDriver(main, listen, self._connection_lost)
            queries = ResyncQueries(
                driver,
                qbe=qb.QueryBuilderEnvironment(settings=PGQ_SETTINGS),
                qbq=qb.QueryQueueBuilder(settings=PGQ_SETTINGS),
                qbs=qb.QuerySchedulerBuilder(settings=PGQ_SETTINGS),
            )
            qm = ResyncQueueManager(queries, channel=types.Channel(CHANNEL))
            qm.queue_manager_id = types.QueueManagerId(self.id)
            qm.wakeups = self.wakeups
            # pgqueuer never sleeps less than this (100 ms by default), which made a delayed
            # job up to 100 ms late (bench/lateness); 5 ms keeps the loop from spinning.
            qm.min_dequeue_poll_interval = timedelta(milliseconds=5)
            qm.entrypoint(jobs.ENTRYPOINT, on_failure="hold", accepts_context=False)(self._handle)
            self.qm = qm
            if self.stopping.is_set():
                return
            house = asyncio.create_task(self._housekeeping(main), name="housekeeping")
            check = asyncio.create_task(
                self.wakeups.watch(qm, driver.listening), name="wakeups_check"
            )
            status = (
                f"ready: worker {str(self.id)[:8]}, concurrency {self.settings.concurrency}, "
                f"tries {self.settings.tries}"
            )
            if first:
                self.ready_sent = True
                self.notifier.ready(status)
                self.log.info(
                    "worker started (pid {}, sleep {} s, tries {}, backoff {}, timeout {} s)",
                    os.getpid(),
                    self.settings.sleep,
                    self.settings.tries,
                    ",".join(f"{b:g}" for b in self.settings.backoff),
                    self.settings.timeout,
                )
            else:
                self.notifier.status(status)
            try:
                await qm.run(
                    dequeue_timeout=timedelta(seconds=self.settings.sleep),
                    batch_size=self.settings.batch_size,
                    # Bounds the jobs held in memory: without it pgqueuer dequeues the whole
                    # backlog at once. Four batches per resync slot keep every slot busy.
                    max_concurrent_tasks=4 * self.settings.batch_size * self.settings.concurrency,
                    mode=(
                        types.QueueExecutionMode.drain
                        if self.settings.stop_when_empty
                        else types.QueueExecutionMode.continuous
                    ),
                    heartbeat_timeout=timedelta(seconds=self.settings.heartbeat_timeout),
                    log_aggregation_interval=timedelta(seconds=30),
                )
            finally:
                for task in (house, check):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self.lost.is_set():
                raise ConnectionLost("the database connection was lost")
        finally:
            self.qm = None
            for c in conns:
                with contextlib.suppress(Exception):
                    await c.close()

    def _connection_lost(self, exc: BaseException) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = _one_line(exc)
        self.lost.set()
        if self.qm is not None:
            self.qm.shutdown.set()

    async def _released(self, conn: psycopg.AsyncConnection) -> int:
        cur = await conn.execute(query("release_jobs"), {"worker": self.id})
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- the job handler and its batcher -------------------------------------------------------

    async def _handle(self, job: models.Job) -> None:
        try:
            payload = jobs.parse_payload(job.payload)
        except jobs.InvalidJob as exc:
            await self._invalid(job, str(exc))
            raise JobFailed(f"invalid job: {exc}") from None
        item = _Item(job, payload, asyncio.get_running_loop().create_future())
        self.pending.append(item)
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush(), name="batcher")
        try:
            await item.future
        except ConnectionLost:
            raise errors.RetryRequested(timedelta(0), CONNECTION_LOST) from None

    async def _invalid(self, job: models.Job, error: str) -> None:
        self.log.bind(job_id=job.id).error("job {} failed at once: {}", job.id, error)
        self.metrics.resyncs.labels("invalid").inc()
        self.metrics.failures.inc()
        self.counts["failed"] += 1
        conn = await self.pool.get()
        try:
            await resync.record_invalid(conn, job.id, job.attempts + 1, self.id, error)
        finally:
            self.pool.put_nowait(conn)

    async def _flush(self) -> None:
        # One turn of the loop lets every job of the same dequeue reach `pending` first.
        await asyncio.sleep(0)
        while self.pending:
            await self.slots.acquire()
            batch = self.pending[: self.settings.batch_size]
            del self.pending[: len(batch)]
            task = asyncio.create_task(self._run_batch(batch), name="resync_batch")
            task.add_done_callback(lambda _: self.slots.release())

    async def _run_batch(self, items: list[_Item]) -> None:
        conn = await self.pool.get()
        try:
            runs = await resync.start_runs(
                conn,
                [(i.job.id, i.payload.course_unit_id, i.payload.reason) for i in items],
                self.id,
            )
            by_job = {r.job_id: r for r in runs}
            for item in items:
                item.run = by_job[item.job.id]
            poison = [i for i in items if i.run and i.run.attempt > self.settings.tries]
            if poison:
                await self._poison(conn, poison)
            live = [i for i in items if i not in poison]
            if live:
                await self._resync(conn, live)
        except Exception as exc:
            lost = is_connection_loss(exc, conn)
            if lost:
                self._connection_lost(exc)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(ConnectionLost() if lost else exc)
        finally:
            self.pool.put_nowait(conn)

    async def _resync(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        runs = [i.run for i in items if i.run is not None]
        try:
            done = await resync.resync(conn, runs, self.settings.timeout)
        except psycopg.Error as exc:
            if is_connection_loss(exc, conn):
                raise
            if len(items) > 1:
                # Find the UE that failed: each on its own, the others still succeed.
                for item in items:
                    await self._resync(conn, [item])
                return
            await self._failed(conn, items[0], exc)
            return
        by_run = {s.run_id: s for s in done}
        for item in items:
            assert item.run is not None
            synced = by_run[item.run.run_id]
            self._log_success(item, synced)
            item.future.set_result(synced)

    async def _failed(self, conn: psycopg.AsyncConnection, item: _Item, exc: psycopg.Error) -> None:
        assert item.run is not None
        error = _one_line(exc)
        state = exc.sqlstate
        decision = jobs.retry_decision(item.run.attempt, self.settings.tries, self.settings.backoff)
        await resync.fail_runs(
            conn, [resync.Failure(item.run.run_id, decision.outcome.value, error, state)]
        )
        log = self._bound(item)
        if decision.outcome is jobs.Outcome.FAIL:
            log.error(
                "resync failed for good after {} attempt(s): {} [{}]",
                item.run.attempt,
                error,
                state,
            )
            self.metrics.resyncs.labels("failed").inc()
            self.metrics.failures.inc()
            self.counts["failed"] += 1
            item.future.set_exception(JobFailed(f"[{state}] {error}"))
            return
        delay = decision.delay * self.settings.time_scale
        log.warning(
            "resync failed (attempt {}/{}), retry in {}: {} [{}]",
            item.run.attempt,
            self.settings.tries,
            jobs.human_duration(delay),
            error,
            state,
        )
        self.metrics.resyncs.labels("retrying").inc()
        self.metrics.retries.inc()
        self.counts["retried"] += 1
        item.future.set_exception(errors.RetryRequested(timedelta(seconds=delay), error))

    async def _poison(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        error = "the worker running this job died on every attempt"
        await resync.fail_runs(
            conn, [resync.Failure(i.run.run_id, "failed", error, None) for i in items if i.run]
        )
        for item in items:
            self._bound(item).error("{} ({} attempts): job failed", error, self.settings.tries)
            self.metrics.resyncs.labels("failed").inc()
            self.metrics.failures.inc()
            self.counts["failed"] += 1
            item.future.set_exception(JobFailed(error))

    def _bound(self, item: _Item) -> Any:
        return self.log.bind(
            job_id=item.job.id,
            course_unit_id=item.payload.course_unit_id,
            attempt=item.run.attempt if item.run else None,
            reason=item.payload.reason,
        )

    def _log_success(self, item: _Item, synced: resync.Synced) -> None:
        log = self._bound(item).bind(course_unit_code=synced.code, duration=synced.seconds)
        self.metrics.run_seconds.observe(synced.seconds)
        self.metrics.resyncs.labels(synced.outcome).inc()
        self.counts["succeeded"] += 1
        if synced.outcome == "missing_unit":
            log.warning(
                "course unit {} no longer exists; job {} done, no retry",
                item.payload.course_unit_id,
                item.job.id,
            )
            return
        changed = ", ".join(
            f"{column} {pair[0]} → {pair[1]}" for column, pair in sorted(synced.changes.items())
        )
        log.bind(changes=synced.changes).info(
            "resynced UE {} ({}) job {} attempt {} reason {} in {}: {}",
            synced.code,
            item.payload.course_unit_id,
            item.job.id,
            item.run.attempt if item.run else "?",
            item.payload.reason,
            jobs.human_duration(synced.seconds),
            changed or "already consistent",
        )
        for warning, detail in synced.warnings:
            log.bind(warning=warning).warning("LMD check on UE {}: {}", synced.code, detail)

    # -- background ---------------------------------------------------------------------------

    async def _heartbeat(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(
            query("worker_heartbeat"),
            {
                "id": self.id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
            },
        )
        self.last_db_ok = time.monotonic()

    async def _housekeeping(self, conn: psycopg.AsyncConnection) -> None:
        next_prune = time.monotonic() + 60  # not at once: a restart loop must not prune in a loop
        while True:
            try:
                await self._heartbeat(conn)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    cur = await conn.execute(query("prune_history"))
                    row = await cur.fetchone()
                    self.log.info("pruned {} history row(s) past retention", row[0] if row else 0)
                cur = await conn.execute(query("fail_unknown_entrypoints"), {"worker": self.id})
                row = await cur.fetchone()
                if row and row[0]:
                    self.log.error("failed {} job(s) with an unknown entrypoint", row[0])
                await self._gauges(conn)
            except Exception as exc:
                if is_connection_loss(exc, conn):
                    self._connection_lost(exc)
                    return
                self.log.warning("housekeeping failed: {}", _one_line(exc))
            await asyncio.sleep(HOUSEKEEPING_EVERY)

    async def _gauges(self, conn: psycopg.AsyncConnection) -> None:
        cur = await conn.execute(query("queue_gauges"))
        row = await cur.fetchone()
        if row is None:
            return
        queued, due, delayed, running, failed, oldest = row
        for state, value in (
            ("queued", queued),
            ("due", due),
            ("delayed", delayed),
            ("running", running),
            ("failed", failed),
        ):
            self.metrics.queue_depth.labels(state).set(value)
        self.metrics.oldest_due.set(oldest)
        self.notifier.status(
            f"{self.counts['succeeded']} resynced, {self.counts['retried']} retried, "
            f"{self.counts['failed']} failed; queue: {due} due, {delayed} delayed, "
            f"{running} running"
        )
        if not self.metrics.served:
            # Only the metrics read these, and they read every queued job's payload: ~1 s
            # every 5 s with 250,000 jobs queued (auto_explain, PostgreSQL 15).
            return
        cur = await conn.execute(query("deferred_gauges"))
        self.metrics.deferred.clear()
        absorbed_total = 0.0
        for reason, sqlstate, count, absorbed in await cur.fetchall():
            self.metrics.deferred.labels(reason, sqlstate).set(count)
            absorbed_total += absorbed
        self.metrics.coalesced.set(absorbed_total)

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            # Healthy: the loop turns and, unless reconnecting, the database answered lately.
            if self.lost.is_set() or time.monotonic() - self.last_db_ok < 60:
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _max_time(self) -> None:
        await asyncio.sleep(self.settings.max_time)
        self.stop(f"--max-time {self.settings.max_time:g} s reached")

    def _mark_stopped(self) -> None:
        with contextlib.suppress(Exception), connect_sync(self.dsn, "stop", timeout=2) as conn:
            conn.execute(query("worker_stopped"), {"id": self.id})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
