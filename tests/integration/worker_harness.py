"""Run the real Worker in the test's event loop, against the test's database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from ue_resync.settings import Settings
from ue_resync.worker import Worker


def settings_for(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "sleep": 0.2,
        "timeout": 2.0,
        "time_scale": 0.01,
        "heartbeat_timeout": 2.0,
        "max_time": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_worker(dsn: str, **overrides: Any) -> AsyncIterator[Worker]:
    worker = Worker(settings_for(dsn, **overrides), dsn)
    task = asyncio.create_task(worker.run())
    await wait_ready(worker, task)
    try:
        yield worker
    finally:
        worker.stop("test over")
        await asyncio.wait_for(task, 30)


async def wait_ready(worker: Worker, task: asyncio.Task[int], timeout: float = 15) -> None:
    """Until the worker listens with its queue manager running; the worker's own exception if it
    ends first."""
    ready = asyncio.create_task(worker.ready.wait())
    try:
        await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if task.done():
        task.result()
        raise AssertionError("the worker stopped before it was ready")
    assert worker.ready.is_set(), f"the worker was not ready within {timeout} s"


async def fetch(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(sql, params or None)
        return await cur.fetchall()


async def fetch_one(dsn: str, sql: str, *params: Any) -> Any:
    rows = await fetch(dsn, sql, *params)
    return rows[0][0] if rows else None
