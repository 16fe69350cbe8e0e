"""The executor: the jobs pgqueuer hands over become batches of resyncs, and each job gets one
recorded outcome.

The jobs of one dequeue are resynced together, up to --batch-size UEs per transaction and
--concurrency transactions at once. A batch that fails is split until the failing UE stands
alone, so one bad UE never holds back the others. A job whose earlier attempts all died with
their worker (the runs found open, counted as crashed) ends failed without running again.
Every job ends in `_record`: the metrics, the counts, the log line and pgqueuer's answer
(success, RetryRequested with the backoff delay, JobFailed) are decided there and nowhere else.

The database work goes through a `Store`; the real one is the module `ue_resync.store`."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from enum import Enum
from typing import Any, Protocol

import psycopg
from loguru import logger
from pgqueuer.domain import errors, models

from ue_resync import jobs, store
from ue_resync.db import is_connection_loss
from ue_resync.durations import human_duration
from ue_resync.log import one_line
from ue_resync.metrics import Metrics
from ue_resync.queue_manager import CONNECTION_LOST
from ue_resync.settings import Settings
from ue_resync.store import Failure, Run, Synced

POISON_ERROR = "the worker running this job died on every attempt"


class JobFailed(Exception):
    """Raised to pgqueuer for a job that ends failed (kept with status 'failed')."""


class ConnectionLost(Exception):
    """The database went away under a resync; the supervisor reconnects."""


class Store(Protocol):
    """What the executor needs of the database (ue_resync.store is the real one: SQL)."""

    async def start_runs(
        self, conn: psycopg.AsyncConnection, jobs: Sequence[tuple[int, int, str]], worker: uuid.UUID
    ) -> list[Run]: ...

    async def resync_units(
        self, conn: psycopg.AsyncConnection, runs: Sequence[Run], timeout: float
    ) -> list[Synced]: ...

    async def fail_runs(
        self, conn: psycopg.AsyncConnection, failures: Sequence[Failure]
    ) -> None: ...

    async def record_invalid(
        self,
        conn: psycopg.AsyncConnection,
        job_id: int,
        attempt: int,
        worker: uuid.UUID,
        error: str,
    ) -> None: ...


class Kind(Enum):
    SUCCEEDED = "succeeded"
    MISSING_UNIT = "missing_unit"
    RETRYING = "retrying"
    FAILED = "failed"  # after its last attempt
    POISON = "poison"  # its worker died on every attempt
    INVALID = "invalid"  # a payload no attempt can run


@dataclasses.dataclass(frozen=True, slots=True)
class Settled:
    """How one job ended this time."""

    kind: Kind
    synced: Synced | None = None
    error: str = ""
    sqlstate: str | None = None
    delay: float = 0.0  # seconds before the next attempt, for RETRYING


@dataclasses.dataclass
class Counts:
    """Jobs settled by this daemon since it started (its systemd STATUS line)."""

    succeeded: int = 0
    retried: int = 0
    failed: int = 0


@dataclasses.dataclass
class _Item:
    job: models.Job
    payload: jobs.ResyncPayload | None  # None: the payload was invalid
    future: asyncio.Future[Synced]
    run: Run | None = None


class Executor:
    def __init__(
        self,
        settings: Settings,
        worker_id: uuid.UUID,
        metrics: Metrics,
        on_lost: Callable[[BaseException], None],
        store: Store = store,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.metrics = metrics
        self.on_lost = on_lost
        self.store = store
        self.counts = Counts()
        self.pool: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        self.pending: list[_Item] = []
        self.flusher: asyncio.Task[None] | None = None
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.log = logger.bind(component="worker", worker_id=str(worker_id)[:8])

    def use(self, connections: Sequence[psycopg.AsyncConnection]) -> None:
        """Resync on these connections from now on (one per --concurrency slot)."""
        self.pool = asyncio.Queue()
        for conn in connections:
            self.pool.put_nowait(conn)

    async def handle(self, job: models.Job) -> None:
        """pgqueuer's entrypoint: returns when the job succeeded, raises what pgqueuer must do."""
        # The dequeue set `updated` to its own now(): due to pick, on the database's clock.
        self.metrics.picked(job.execute_after, job.updated)
        item = _Item(job, None, asyncio.get_running_loop().create_future())
        try:
            item.payload = jobs.parse_payload(job.payload)
        except jobs.InvalidJob as exc:
            await self._invalid(item, str(exc))
        else:
            self.pending.append(item)
            if self.flusher is None or self.flusher.done():
                self.flusher = asyncio.create_task(self._flush(), name="batcher")
        try:
            await item.future
        except ConnectionLost:
            raise errors.RetryRequested(timedelta(0), CONNECTION_LOST) from None

    async def _invalid(self, item: _Item, error: str) -> None:
        conn = await self.pool.get()
        try:
            await self.store.record_invalid(
                conn, item.job.id, item.job.attempts + 1, self.worker_id, error
            )
        finally:
            self.pool.put_nowait(conn)
        self._record(item, Settled(Kind.INVALID, error=error))

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
            runs = await self.store.start_runs(
                conn, [(i.job.id, *_unit_and_reason(i)) for i in items], self.worker_id
            )
            by_job = {r.job_id: r for r in runs}
            for item in items:
                item.run = by_job[item.job.id]
            poison = [i for i in items if i.run and i.run.attempt > self.settings.tries]
            if poison:
                await self.store.fail_runs(
                    conn, [Failure(_run(i).run_id, "failed", POISON_ERROR, None) for i in poison]
                )
                for item in poison:
                    self._record(item, Settled(Kind.POISON, error=POISON_ERROR))
            live = [i for i in items if i not in poison]
            if live:
                await self._resync(conn, live)
        except Exception as exc:
            lost = is_connection_loss(exc, conn)
            if lost:
                self.on_lost(exc)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(ConnectionLost() if lost else exc)
        finally:
            self.pool.put_nowait(conn)

    async def _resync(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        try:
            done = await self.store.resync_units(
                conn, [_run(i) for i in items], self.settings.timeout
            )
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
            synced = by_run[_run(item).run_id]
            kind = Kind.MISSING_UNIT if synced.outcome == "missing_unit" else Kind.SUCCEEDED
            self._record(item, Settled(kind, synced=synced))

    async def _failed(self, conn: psycopg.AsyncConnection, item: _Item, exc: psycopg.Error) -> None:
        run = _run(item)
        error = one_line(exc)
        decision = jobs.retry_decision(run.attempt, self.settings.tries, self.settings.backoff)
        await self.store.fail_runs(
            conn, [Failure(run.run_id, decision.outcome.value, error, exc.sqlstate)]
        )
        if decision.outcome is jobs.Outcome.FAIL:
            self._record(item, Settled(Kind.FAILED, error=error, sqlstate=exc.sqlstate))
        else:
            delay = decision.delay * self.settings.time_scale
            self._record(
                item, Settled(Kind.RETRYING, error=error, sqlstate=exc.sqlstate, delay=delay)
            )

    # -- the one place an outcome is recorded ------------------------------------------------

    def _record(self, item: _Item, settled: Settled) -> None:
        """Metrics, counts, log line and pgqueuer's answer for one job's attempt."""
        log = self._bound(item)
        kind = settled.kind
        label = "failed" if kind is Kind.POISON else kind.value
        self.metrics.resyncs.labels(label).inc()
        if settled.synced is not None:
            self.metrics.run_seconds.observe(settled.synced.seconds)
            self.counts.succeeded += 1
            self._log_success(item, settled.synced, log)
            item.future.set_result(settled.synced)
            return
        if kind is Kind.RETRYING:
            self.metrics.retries.inc()
            self.counts.retried += 1
            log.warning(
                "resync failed (attempt {}/{}), retry in {}: {} [{}]",
                _run(item).attempt,
                self.settings.tries,
                human_duration(settled.delay),
                settled.error,
                settled.sqlstate,
            )
            item.future.set_exception(
                errors.RetryRequested(timedelta(seconds=settled.delay), settled.error)
            )
            return
        self.metrics.failures.inc()
        self.counts.failed += 1
        if kind is Kind.INVALID:
            log.error("job {} failed at once: {}", item.job.id, settled.error)
            failure = JobFailed(f"invalid job: {settled.error}")
        elif kind is Kind.POISON:
            log.error("{} ({} attempts): job failed", settled.error, self.settings.tries)
            failure = JobFailed(settled.error)
        else:
            log.error(
                "resync failed for good after {} attempt(s): {} [{}]",
                _run(item).attempt,
                settled.error,
                settled.sqlstate,
            )
            failure = JobFailed(f"[{settled.sqlstate}] {settled.error}")
        item.future.set_exception(failure)

    def _bound(self, item: _Item) -> Any:
        if item.payload is None:
            return self.log.bind(job_id=item.job.id)
        return self.log.bind(
            job_id=item.job.id,
            course_unit_id=item.payload.course_unit_id,
            attempt=item.run.attempt if item.run else None,
            reason=item.payload.reason,
        )

    def _log_success(self, item: _Item, synced: Synced, log: Any) -> None:
        unit, reason = _unit_and_reason(item)
        log = log.bind(course_unit_code=synced.code, duration=synced.seconds)
        if synced.outcome == "missing_unit":
            log.warning("course unit {} no longer exists; job {} done, no retry", unit, item.job.id)
            return
        changed = ", ".join(
            f"{column} {pair[0]} → {pair[1]}" for column, pair in sorted(synced.changes.items())
        )
        log.bind(changes=synced.changes).info(
            "resynced UE {} ({}) job {} attempt {} reason {} in {}: {}",
            synced.code,
            unit,
            item.job.id,
            _run(item).attempt,
            reason,
            human_duration(synced.seconds),
            changed or "already consistent",
        )
        for warning, detail in synced.warnings:
            log.bind(warning=warning).warning("LMD check on UE {}: {}", synced.code, detail)


def _run(item: _Item) -> Run:
    assert item.run is not None, "a job in a batch has its run opened first"
    return item.run


def _unit_and_reason(item: _Item) -> tuple[int, str]:
    assert item.payload is not None, "only valid jobs are batched"
    return item.payload.course_unit_id, item.payload.reason
