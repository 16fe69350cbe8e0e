"""pgqueuer, wired to this schema: its queue manager on the `resync` schema and the `ue_resync`
channel, with three adjustments.

- SplitDriver: LISTEN on a connection of its own, so a wake-up never waits for a query.
- ResyncQueries: a retry that folds into the UE's queued job (one queued job per UE) and rides
  out the transient errors of that fold; a job held across a lost connection is not retried
  here but handed back by the worker once it has reconnected.
- ResyncQueueManager: --stop-when-empty drains what is due, not what is delayed; while the
  daemon's wake-ups fail (wakeups.py), the wait between two dequeues is capped.

pgqueuer dequeues (NOTIFY wake-up, a timer for the next deferred job, polling every --sleep as
the fallback) and calls the handler once per job; what the handler raises becomes the job's
fate: RetryRequested re-queues it with a delay, anything else keeps it as status 'failed'."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta

import psycopg
from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.core.qm import QueueManager
from pgqueuer.core.tm import TaskManager
from pgqueuer.domain import models, types
from pgqueuer.domain.settings import DBSettings
from pgqueuer.ports.driver import NotifyCallback

from ue_resync import jobs
from ue_resync.queries import text
from ue_resync.settings import Settings
from ue_resync.wakeups import Wakeups

CHANNEL = "ue_resync"
PGQ_SETTINGS = DBSettings(db_schema="resync", channel=types.Channel(CHANNEL))
# The reason a job's RetryRequested carries when its connection was lost: not an attempt.
CONNECTION_LOST = "connection_lost"
TABLE_EVENT = '"table_changed_event"'  # in the payload of the queue table's NOTIFY
RETRY_JOB_TRIES = 5


class SplitDriver(PsycopgDriver):
    """pgqueuer's psycopg driver with LISTEN on a second connection.

    The stock driver waits for notifications on the connection its queries use, holding that
    connection's lock for up to a second at a time, which delays the dequeue of a due job by as
    much. Here queries and notifications never wait for each other. `on_listening` is called
    once LISTEN is in place; `on_lost` when the LISTEN connection fails."""

    def __init__(
        self,
        connection: psycopg.AsyncConnection,
        listen: psycopg.AsyncConnection,
        on_lost: Callable[[BaseException], None],
        on_listening: Callable[[], None],
    ) -> None:
        super().__init__(connection)
        self._listen = listen
        self._on_lost = on_lost
        self._on_listening = on_listening
        self._table_waiters: list[asyncio.Future[None]] = []

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
        self._on_listening()

    async def watch_notifies(self) -> None:
        try:
            while not self.shutdown.is_set():
                async for note in self._listen.notifies(timeout=0.5):
                    for callback in list(self._listeners.get(note.channel, [])):
                        callback(note.payload)
                    if TABLE_EVENT in note.payload:
                        for waiter in self._table_waiters:
                            if not waiter.done():
                                waiter.set_result(None)
        except (psycopg.Error, OSError) as exc:
            self._on_lost(exc)

    async def probe_table(self, timeout: float) -> bool:
        """Whether a change of the queue table reaches the LISTEN within `timeout` seconds: the
        path every real job's wake-up takes (the table's trigger, fn_pgqueuer_changed, and the
        channel it notifies). The probe is an UPDATE of no row, which fires the statement
        trigger all the same; any table event that arrives meanwhile proves the path as well."""
        waiter = asyncio.get_running_loop().create_future()
        self._table_waiters.append(waiter)
        try:
            await self._connection.execute(text("probe_queue_trigger"))
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._table_waiters.remove(waiter)


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

    wakeups: Wakeups | None = None

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


def queue_manager(
    driver: SplitDriver,
    worker_id: types.QueueManagerId,
    handler: Callable[[models.Job], Awaitable[None]],
) -> ResyncQueueManager:
    """A queue manager that runs `resync_course_unit` jobs with `handler`, as `worker_id`."""
    queries = ResyncQueries(
        driver,
        qbe=qb.QueryBuilderEnvironment(settings=PGQ_SETTINGS),
        qbq=qb.QueryQueueBuilder(settings=PGQ_SETTINGS),
        qbs=qb.QuerySchedulerBuilder(settings=PGQ_SETTINGS),
    )
    qm = ResyncQueueManager(queries, channel=types.Channel(CHANNEL))
    qm.queue_manager_id = worker_id
    # pgqueuer never sleeps less than this (100 ms by default), which made a delayed job up to
    # 100 ms late (bench/lateness); 5 ms keeps the loop from spinning.
    qm.min_dequeue_poll_interval = timedelta(milliseconds=5)
    qm.entrypoint(jobs.ENTRYPOINT, on_failure="hold", accepts_context=False)(handler)
    return qm


async def run(qm: ResyncQueueManager, settings: Settings) -> None:
    """Dequeue and run jobs until `qm.shutdown` is set (or the queue is drained, with
    --stop-when-empty)."""
    await qm.run(
        dequeue_timeout=timedelta(seconds=settings.sleep),
        batch_size=settings.batch_size,
        # Bounds the jobs held in memory: without it pgqueuer dequeues the whole backlog at
        # once. Four batches per resync slot keep every slot busy.
        max_concurrent_tasks=4 * settings.batch_size * settings.concurrency,
        mode=(
            types.QueueExecutionMode.drain
            if settings.stop_when_empty
            else types.QueueExecutionMode.continuous
        ),
        heartbeat_timeout=timedelta(seconds=settings.heartbeat_timeout),
        log_aggregation_interval=timedelta(seconds=30),
    )
