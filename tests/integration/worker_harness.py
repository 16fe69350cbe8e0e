"""Run the real Worker in the test's event loop, against the test's database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from tests.catalog import await_for
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

    async def listening() -> bool:
        if task.done():
            task.result()  # surface the worker's exception
        return worker.qm is not None and worker.pool.qsize() > 0

    await await_for(listening, 15, "the worker to start")
    try:
        yield worker
    finally:
        worker.stop("test over")
        await asyncio.wait_for(task, 30)


async def fetch(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(sql, params or None)
        return await cur.fetchall()


async def fetch_one(dsn: str, sql: str, *params: Any) -> Any:
    rows = await fetch(dsn, sql, *params)
    return rows[0][0] if rows else None
