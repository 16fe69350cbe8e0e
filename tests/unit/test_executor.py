"""The executor's decisions, with a fake of ue_resync.store standing in for the database:
batching, splitting a failing batch down to its failing UE, poison jobs, and the one record of
each outcome (pgqueuer's answer, metrics, counts, log line)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from loguru import logger
from pgqueuer.domain import errors, models

from support.poll import await_for
from ue_resync.executor import POISON_ERROR, Executor, JobFailed
from ue_resync.metrics import Metrics
from ue_resync.queue_manager import CONNECTION_LOST
from ue_resync.settings import Settings
from ue_resync.store import Failure, Run, Synced

SCALE = 0.01


class FakeStore:
    """ue_resync.store's four calls, in memory. `attempts` gives the attempt a job's run
    opens as (1 by default); resyncing a UE in `poisoned` raises what a CHECK would."""

    def __init__(
        self,
        attempts: dict[int, int] | None = None,
        poisoned: Sequence[int] = (),
        missing: Sequence[int] = (),
    ) -> None:
        self.attempts = attempts or {}
        self.poisoned = set(poisoned)
        self.missing = set(missing)
        self.lose_connection = False
        self.gate: asyncio.Event | None = None  # when set, resyncs wait for it
        self.in_flight = 0
        self.most_in_flight = 0
        self.batches: list[list[int]] = []
        self.entered: asyncio.Queue[list[int]] = asyncio.Queue()  # each batch as it starts
        self.failures: list[Failure] = []
        self.invalid: list[tuple[int, int, str]] = []
        self._run_ids = itertools.count(100)

    async def start_runs(self, conn: Any, jobs: Any, worker: Any) -> list[Run]:
        return [
            Run(job, unit, reason, next(self._run_ids), self.attempts.get(job, 1))
            for job, unit, reason in jobs
        ]

    async def resync_units(self, conn: Any, runs: Sequence[Run], timeout: float) -> list[Synced]:
        units = [r.course_unit_id for r in runs]
        self.batches.append(units)
        self.entered.put_nowait(units)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        if self.lose_connection:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        bad = sorted(self.poisoned.intersection(units))
        if bad:
            raise psycopg.errors.CheckViolation(f"poisoned unit {bad[0]}")
        return [
            Synced(
                run_id=r.run_id,
                course_unit_id=r.course_unit_id,
                code=f"UE{r.course_unit_id}",
                outcome="missing_unit" if r.course_unit_id in self.missing else "succeeded",
                changes={"credits": [0, 2]},
                seconds=0.002,
            )
            for r in runs
        ]

    async def fail_runs(self, conn: Any, failures: Sequence[Failure]) -> None:
        self.failures.extend(failures)

    async def record_invalid(
        self, conn: Any, job_id: int, attempt: int, worker: Any, error: str
    ) -> None:
        self.invalid.append((job_id, attempt, error))


def job(job_id: int, payload: bytes | None = None, attempts: int = 0) -> models.Job:
    now = dt.datetime.now(dt.UTC)
    if payload is None:
        payload = json.dumps({"course_unit_id": job_id, "reason": "test"}).encode()
    return models.Job(
        id=job_id,
        priority=0,
        created=now,
        updated=now,
        heartbeat=now,
        execute_after=now,
        status="picked",
        entrypoint="resync_course_unit",
        payload=payload,
        attempts=attempts,
        queue_manager_id=None,
        headers=None,
    )


def executor(store: FakeStore, lost: list[BaseException] | None = None, **values: Any) -> Executor:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="postgresql://unused@localhost/unused",
        **{"tries": 3, "backoff": (30, 60, 120), "time_scale": SCALE, **values},
    )
    on_lost = lost.append if lost is not None else (lambda exc: None)
    ex = Executor(settings, uuid.uuid4(), Metrics(), on_lost, store=store)
    # Stand-ins for the connections: the executor only hands them to the store, and asks
    # whether one is broken.
    ex.use([types.SimpleNamespace(broken=False) for _ in range(settings.concurrency)])
    return ex


async def run(ex: Executor, *jobs: models.Job) -> list[BaseException | None]:
    """The jobs of one dequeue, handled as pgqueuer does: one task each, all at once."""
    handled = asyncio.gather(*(ex.handle(j) for j in jobs), return_exceptions=True)
    return await asyncio.wait_for(handled, 10)  # a job left unanswered would hang pgqueuer


async def until(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    """Let the event loop turn (interval 0: one turn, not a delay) until `condition()` holds."""

    async def holds() -> bool:
        return condition()

    await await_for(holds, timeout, what, interval=0)


def sample(ex: Executor, name: str, **labels: str) -> float:
    return ex.metrics.registry.get_sample_value(name, labels or None) or 0.0


def resyncs(ex: Executor, outcome: str) -> float:
    return sample(ex, "ue_resync_resyncs_total", outcome=outcome)


@pytest.fixture
def logged() -> Iterator[list[Any]]:
    records: list[Any] = []
    sink = logger.add(lambda m: records.append(m.record), level="DEBUG")
    yield records
    logger.remove(sink)


# -- batching ------------------------------------------------------------------------------------


async def test_the_jobs_of_one_dequeue_are_resynced_in_batches_of_batch_size():
    store = FakeStore()
    ex = executor(store, batch_size=3, concurrency=1)
    results = await run(ex, *(job(n) for n in range(1, 8)))
    assert results == [None] * 7
    assert store.batches == [[1, 2, 3], [4, 5, 6], [7]]
    assert ex.counts.succeeded == 7


async def test_no_more_batches_in_flight_than_concurrency():
    store = FakeStore()
    store.gate = asyncio.Event()
    ex = executor(store, batch_size=2, concurrency=2)
    handled = asyncio.ensure_future(run(ex, *(job(n) for n in range(1, 9))))

    started = [await asyncio.wait_for(store.entered.get(), 5) for _ in range(2)]
    assert started == [[1, 2], [3, 4]]
    assert store.entered.empty()  # the third waits for a free slot
    store.gate.set()
    assert await asyncio.wait_for(handled, 5) == [None] * 8
    assert store.most_in_flight == 2
    assert len(store.batches) == 4


async def test_jobs_that_arrive_while_every_slot_is_busy_wait_and_share_one_batch():
    store = FakeStore()
    store.gate = asyncio.Event()
    ex = executor(store, batch_size=10, concurrency=1)
    first = asyncio.ensure_future(run(ex, job(1), job(2)))
    assert await asyncio.wait_for(store.entered.get(), 5) == [1, 2]
    # Two more dequeues while [1, 2] runs: their jobs wait for the slot, and join up.
    later = [asyncio.ensure_future(run(ex, job(3), job(4)))]
    await until(lambda: len(ex.pending) == 2, "two jobs pending")
    later.append(asyncio.ensure_future(run(ex, job(5))))
    await until(lambda: len(ex.pending) == 3, "three jobs pending")
    store.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 5) == [
        [None] * 2,
        [None] * 2,
        [None],
    ]
    assert store.batches == [[1, 2], [3, 4, 5]]


# -- a failing batch -------------------------------------------------------------------------------


async def test_a_failing_batch_is_split_until_the_failing_unit_stands_alone():
    store = FakeStore(poisoned=[3])
    ex = executor(store, batch_size=10)
    results = await run(ex, *(job(n) for n in range(1, 6)))
    assert store.batches == [[1, 2, 3, 4, 5], [1], [2], [3], [4], [5]]
    assert [r is None for r in results] == [True, True, False, True, True]
    assert isinstance(results[2], errors.RetryRequested)
    [failure] = store.failures
    assert (failure.outcome, failure.error, failure.sqlstate) == (
        "retrying",
        "poisoned unit 3",
        "23514",
    )
    assert ex.counts.succeeded == 4 and ex.counts.retried == 1 and ex.counts.failed == 0


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 30 * SCALE), (2, 60 * SCALE), (3, None)], ids=["1st", "2nd", "last"]
)
async def test_a_failed_attempt_is_retried_after_its_backoff_until_the_last(attempt, delay):
    store = FakeStore(attempts={7: attempt}, poisoned=[7])
    ex = executor(store)
    [result] = await run(ex, job(7))
    [failure] = store.failures
    if delay is None:
        assert isinstance(result, JobFailed) and str(result) == "[23514] poisoned unit 7"
        assert failure.outcome == "failed"
        assert ex.counts.failed == 1
    else:
        assert isinstance(result, errors.RetryRequested)
        assert result.delay == dt.timedelta(seconds=delay)
        assert result.reason == "poisoned unit 7"
        assert failure.outcome == "retrying"
        assert ex.counts.retried == 1


# -- poison jobs ------------------------------------------------------------------------------


async def test_a_job_whose_worker_died_on_every_attempt_fails_without_running():
    store = FakeStore(attempts={2: 4})  # tries 3: attempt 4 means 3 runs left open by crashes
    ex = executor(store)
    results = await run(ex, job(1), job(2), job(3))
    assert store.batches == [[1, 3]]
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], JobFailed) and str(results[1]) == POISON_ERROR
    assert [(f.outcome, f.error) for f in store.failures] == [("failed", POISON_ERROR)]
    assert resyncs(ex, "failed") == 1 and sample(ex, "ue_resync_failures_total") == 1


async def test_the_last_allowed_attempt_still_runs():
    store = FakeStore(attempts={1: 3})
    ex = executor(store)
    assert await run(ex, job(1)) == [None]
    assert store.batches == [[1]]


# -- outcomes ------------------------------------------------------------------------------------


async def test_an_invalid_payload_fails_at_once_and_is_recorded(logged):
    store = FakeStore()
    ex = executor(store)
    results = await run(ex, job(5, payload=b"{nope", attempts=1), job(6))
    assert isinstance(results[0], JobFailed)
    assert str(results[0]).startswith("invalid job: payload is not JSON")
    assert results[1] is None
    assert [(j, a) for j, a, _ in store.invalid] == [(5, 2)]
    assert store.batches == [[6]]
    assert resyncs(ex, "invalid") == 1 and sample(ex, "ue_resync_failures_total") == 1
    assert ex.counts.failed == 1 and ex.counts.succeeded == 1
    errors_logged = [r for r in logged if r["level"].name == "ERROR"]
    assert [r["extra"]["job_id"] for r in errors_logged] == [5]
    assert "failed at once: payload is not JSON" in errors_logged[0]["message"]


async def test_each_outcome_is_recorded_once_in_metrics_counts_and_log(logged):
    store = FakeStore(attempts={3: 3}, poisoned=[2, 3], missing=[4])
    ex = executor(store, batch_size=10)
    await run(ex, job(1), job(2), job(3), job(4))
    assert {o: resyncs(ex, o) for o in ("succeeded", "retrying", "failed", "missing_unit")} == {
        "succeeded": 1,
        "retrying": 1,
        "failed": 1,
        "missing_unit": 1,
    }
    assert sample(ex, "ue_resync_retries_total") == 1
    assert sample(ex, "ue_resync_failures_total") == 1
    assert sample(ex, "ue_resync_resync_duration_seconds_count") == 2
    assert (ex.counts.succeeded, ex.counts.retried, ex.counts.failed) == (2, 1, 1)
    by_job = {r["extra"]["job_id"]: r for r in logged if "job_id" in r["extra"]}
    assert len(logged) == 4 and sorted(by_job) == [1, 2, 3, 4]
    assert by_job[1]["level"].name == "INFO"
    assert by_job[1]["message"] == (
        "resynced UE UE1 (1) job 1 attempt 1 reason test in 2 ms: credits 0 → 2"
    )
    assert by_job[2]["level"].name == "WARNING"
    assert by_job[2]["message"] == (
        "resync failed (attempt 1/3), retry in 300 ms: poisoned unit 2 [23514]"
    )
    assert by_job[3]["level"].name == "ERROR"
    assert by_job[3]["message"] == (
        "resync failed for good after 3 attempt(s): poisoned unit 3 [23514]"
    )
    assert by_job[4]["level"].name == "WARNING"
    assert "no longer exists" in by_job[4]["message"]
    assert by_job[2]["extra"]["course_unit_id"] == 2 and by_job[2]["extra"]["attempt"] == 1


async def test_a_lost_connection_hands_the_jobs_back_without_recording_an_attempt():
    store = FakeStore()
    store.lose_connection = True
    lost: list[BaseException] = []
    ex = executor(store, lost=lost, batch_size=10)
    results = await run(ex, job(1), job(2))
    for result in results:
        assert isinstance(result, errors.RetryRequested)
        assert (result.delay, result.reason) == (dt.timedelta(0), CONNECTION_LOST)
    assert len(lost) == 1 and isinstance(lost[0], psycopg.OperationalError)
    assert store.failures == []
    assert sample(ex, "ue_resync_resyncs_total", outcome="succeeded") == 0
    assert (ex.counts.succeeded, ex.counts.retried, ex.counts.failed) == (0, 0, 0)
